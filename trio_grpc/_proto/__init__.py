"""Generated code for the gRPC health and reflection protos, registered in a private descriptor pool.

grpcio-health-checking and grpcio-reflection define the same symbols (grpc.health.v1.HealthCheckRequest, ...)
in the default pool under other file names, so ours live in POOL to let both be imported in one process.
Written by proto/generate.py: edit that script, not this file.
"""

from google.protobuf import descriptor_pool

__all__ = ["POOL"]

POOL = descriptor_pool.DescriptorPool()
