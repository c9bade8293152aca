// Command triointerop is the gRPC interop TestService server and client on grpc-go, written for trio-grpc's
// test suite from doc/interop-test-descriptions.md.
//
//	triointerop server --port=0 [--use_tls=true --tls_cert_file=... --tls_key_file=...]
//	triointerop client --server_port=N --test_cases=all [--use_tls=true --use_test_ca=true --ca_file=...
//	    --server_host_override=foo.test.google.fr]
//
// The server prints "interop server listening on port N (...)" once it accepts connections; the client runs
// its cases in one process and prints one JSON line per case: {"case": ..., "passed": ..., "error": ...}.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: triointerop server|client [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		runServer(os.Args[2:])
	case "client":
		runClient(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: expected server or client\n", os.Args[1])
		os.Exit(2)
	}
}
