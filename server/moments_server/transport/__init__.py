"""gRPC transport: servicers, status mapping, auth, health and reflection on a grpc.aio server."""
