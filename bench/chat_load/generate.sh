#!/usr/bin/env bash
# Regenerates src/chatload/rpc/ from proto/rpc/chat.proto for the Go load generator (bench/chat_fanout.py).
# Debian's protoc-gen-go and protoc-gen-go-grpc generate code that builds against the installed grpc-go 1.33;
# the M options give the file its GOPATH import path in place of its go_package.
set -euo pipefail
cd "$(dirname "$0")"
package=chatload/rpc
file=rpc/chat.proto
rm -rf "src/$package" && mkdir -p src
protoc -I ../../proto --go_out=src --go-grpc_out=src "--go_opt=M$file=$package" "--go-grpc_opt=M$file=$package" "$file"
