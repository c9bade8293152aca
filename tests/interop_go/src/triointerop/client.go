package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "triointerop/grpc_testing"
)

// peer is what a case talks to: the process's one connection, and a way to open a fresh one.
type peer struct {
	conn *grpc.ClientConn
	dial func() (*grpc.ClientConn, error)
}

func (p peer) stub() pb.TestServiceClient { return pb.NewTestServiceClient(p.conn) }

type testCase struct {
	name string
	run  func(context.Context, peer) error
}

// cases are the spec's, in the order of tests/interop/client.py's SPEC_CASES, then this suite's own.
var cases = []testCase{
	{"empty_unary", emptyUnary},
	{"large_unary", largeUnary},
	{"client_compressed_unary", clientCompressedUnary},
	{"server_compressed_unary", serverCompressedUnary},
	{"client_streaming", clientStreaming},
	{"client_compressed_streaming", clientCompressedStreaming},
	{"server_streaming", serverStreaming},
	{"server_compressed_streaming", serverCompressedStreaming},
	{"ping_pong", pingPong},
	{"empty_stream", emptyStream},
	{"timeout_on_sleeping_server", timeoutOnSleepingServer},
	{"cancel_after_begin", cancelAfterBegin},
	{"cancel_after_first_response", cancelAfterFirstResponse},
	{"custom_metadata", customMetadata},
	{"status_code_and_message", statusCodeAndMessage},
	{"special_status_message", specialStatusMessage},
	{"unimplemented_method", unimplementedMethod},
	{"unimplemented_service", unimplementedService},
	{"very_large_request", veryLargeRequest},
	{"flow_control_lazy_window", flowControlLazyWindow},
}

type result struct {
	Case    string  `json:"case"`
	Passed  bool    `json:"passed"`
	Error   string  `json:"error,omitempty"`
	Seconds float64 `json:"seconds"`
}

func runClient(arguments []string) {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	host := flags.String("server_host", "localhost", "server address")
	port := flags.Int("server_port", 0, "server port")
	override := flags.String("server_host_override", "", "name for TLS verification and :authority")
	useTLS := flags.Bool("use_tls", false, "connect with TLS")
	useTestCA := flags.Bool("use_test_ca", false, "trust --ca_file instead of the system's CAs")
	caFile := flags.String("ca_file", "", "PEM file of the test CA")
	names := flags.String("test_cases", "all", "comma-separated cases, or all")
	timeout := flags.Duration("case_timeout", 10*time.Second, "deadline of each case")
	_ = flags.Parse(arguments)

	selected, err := selectCases(*names)
	if err != nil {
		log.Fatal(err)
	}
	options := []grpc.DialOption{grpc.WithStatsHandler(compressionStats{})}
	if *useTLS {
		var creds credentials.TransportCredentials
		if *useTestCA {
			if creds, err = credentials.NewClientTLSFromFile(*caFile, *override); err != nil {
				log.Fatalf("cannot load the test CA: %v", err)
			}
		} else {
			creds = credentials.NewClientTLSFromCert(nil, *override)
		}
		options = append(options, grpc.WithTransportCredentials(creds))
	} else {
		options = append(options, grpc.WithInsecure())
	}
	if *override != "" {
		options = append(options, grpc.WithAuthority(*override))
	}
	target := net.JoinHostPort(*host, strconv.Itoa(*port))
	dial := func() (*grpc.ClientConn, error) { return grpc.Dial(target, options...) }
	conn, err := dial()
	if err != nil {
		log.Fatalf("cannot dial %s: %v", target, err)
	}
	defer conn.Close()

	failed := false
	output := json.NewEncoder(os.Stdout)
	for _, c := range selected {
		outcome := runCase(c, peer{conn, dial}, *timeout)
		failed = failed || !outcome.Passed
		_ = output.Encode(outcome)
	}
	if failed {
		os.Exit(1)
	}
}

func selectCases(names string) ([]testCase, error) {
	if names == "all" {
		return cases, nil
	}
	byName := make(map[string]testCase, len(cases))
	for _, c := range cases {
		byName[c.name] = c
	}
	var selected []testCase
	for _, name := range strings.Split(names, ",") {
		c, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("unknown test case %q", name)
		}
		selected = append(selected, c)
	}
	return selected, nil
}

// runCase runs one case under its own deadline, so that a stuck case fails instead of hanging the run.
func runCase(c testCase, p peer, timeout time.Duration) result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := c.run(ctx, p)
	outcome := result{Case: c.name, Passed: err == nil, Seconds: time.Since(start).Seconds()}
	if err != nil {
		outcome.Error = err.Error()
	}
	return outcome
}

// expectCode checks that err is a status with code want.
func expectCode(err error, want codes.Code) error {
	if err == nil {
		return fmt.Errorf("expected %v, the call succeeded", want)
	}
	if got := status.Code(err); got != want {
		return fmt.Errorf("expected %v, got %v", want, err)
	}
	return nil
}

// expectEnd checks that a stream ended with OK after the responses read so far.
func expectEnd(err error, what string) error {
	if err == io.EOF {
		return nil
	}
	if err == nil {
		return fmt.Errorf("%s: expected the end of the stream, got another response", what)
	}
	return fmt.Errorf("%s: %v", what, err)
}
