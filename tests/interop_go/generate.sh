#!/usr/bin/env bash
# Regenerates src/triointerop/grpc_testing/ from proto/grpc/testing/*.proto for the Go interop program.
# Debian 12's protoc-gen-go 1.28.1 and protoc-gen-go-grpc (built from grpc-go 1.33.3, "1.0") generate code
# that builds against the installed grpc-go 1.33 and protobuf-go 1.28. The .proto files carry no go_package,
# so the M options give them their GOPATH import path.
set -euo pipefail
cd "$(dirname "$0")"
package=triointerop/grpc_testing
files=(grpc/testing/empty.proto grpc/testing/messages.proto grpc/testing/test.proto)
options=()
for file in "${files[@]}"; do
    options+=("--go_opt=M$file=$package" "--go-grpc_opt=M$file=$package")
done
rm -rf "src/$package" && mkdir -p src
protoc -I ../../proto --go_out=src --go-grpc_out=src "${options[@]}" "${files[@]}"
