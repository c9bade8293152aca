"""`python -m trio_grpc.codegen <protoc arguments>`: protoc with the trio_grpc plugin (see the package)."""

import sys

from . import protoc

sys.exit(protoc(sys.argv[1:]))
