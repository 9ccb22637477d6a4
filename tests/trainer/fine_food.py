"""The slices of the Amazon Fine Food reviews the trainer tests train the sentiment head on."""

TRAIN_LIMIT = 800
TEST_LIMIT = 300
