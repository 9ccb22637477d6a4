"""Model serving: TF Serving-compatible gRPC server, client and deploy configs."""
