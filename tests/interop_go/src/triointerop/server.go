package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	_ "google.golang.org/grpc/encoding/gzip" // registers gzip, for compressed requests
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "triointerop/grpc_testing"
)

const (
	initialMetadataKey  = "x-grpc-test-echo-initial"
	trailingMetadataKey = "x-grpc-test-echo-trailing-bin"
	// very_large_request sends 10 MiB; grpc-go's default limit is 4 MiB.
	maxMessageSize = 16 * 1024 * 1024
)

// testService implements the spec's server features: EmptyCall, UnaryCall, StreamingInputCall,
// StreamingOutputCall, FullDuplexCall, HalfDuplexCall, CompressedRequest, Echo Status, Echo Metadata and
// ResponseParameters.interval_us. UnimplementedCall is left unimplemented, as unimplemented_method expects.
//
// CompressedResponse cannot be done on grpc-go 1.33: its server compresses every response of a call whose
// request came compressed, and none otherwise; a handler cannot choose per call or per message. Requests
// asking for it get their response the way grpc-go sends it (server_compressed_* are skipped against it).
type testService struct {
	pb.UnimplementedTestServiceServer
}

func payload(responseType pb.PayloadType, size int32) (*pb.Payload, error) {
	if responseType != pb.PayloadType_COMPRESSABLE {
		return nil, status.Errorf(codes.InvalidArgument, "unsupported response_type %v", responseType)
	}
	return &pb.Payload{Type: responseType, Body: make([]byte, size)}, nil
}

// checkCompressed is CompressedRequest: a request marked expect_compressed must have come compressed.
func checkCompressed(ctx context.Context, expectCompressed *pb.BoolValue) error {
	if expectCompressed.GetValue() && !lastArrivalCompressed(ctx) {
		return status.Error(codes.InvalidArgument, "expected a compressed request, got an uncompressed one")
	}
	return nil
}

// echoStatus is Echo Status: the requested status, or nil for none (or OK).
func echoStatus(requested *pb.EchoStatus) error {
	if requested.GetCode() == 0 {
		return nil
	}
	return status.Error(codes.Code(requested.GetCode()), requested.GetMessage())
}

// echoMetadata is Echo Metadata: the echo-initial key back as initial metadata, echo-trailing-bin as trailers.
func echoMetadata(ctx context.Context, sendHeader func(metadata.MD) error, setTrailer func(metadata.MD)) error {
	received, _ := metadata.FromIncomingContext(ctx)
	if values := received.Get(initialMetadataKey); len(values) > 0 {
		if err := sendHeader(metadata.Pairs(initialMetadataKey, values[0])); err != nil {
			return err
		}
	}
	if values := received.Get(trailingMetadataKey); len(values) > 0 {
		setTrailer(metadata.Pairs(trailingMetadataKey, values[0]))
	}
	return nil
}

func echoUnaryMetadata(ctx context.Context) error {
	return echoMetadata(ctx,
		func(md metadata.MD) error { return grpc.SendHeader(ctx, md) },
		func(md metadata.MD) { _ = grpc.SetTrailer(ctx, md) })
}

func echoStreamMetadata(stream grpc.ServerStream) error {
	return echoMetadata(stream.Context(), stream.SendHeader, stream.SetTrailer)
}

func (testService) EmptyCall(ctx context.Context, _ *pb.Empty) (*pb.Empty, error) {
	if err := echoUnaryMetadata(ctx); err != nil {
		return nil, err
	}
	return &pb.Empty{}, nil
}

func (testService) UnaryCall(ctx context.Context, request *pb.SimpleRequest) (*pb.SimpleResponse, error) {
	if err := checkCompressed(ctx, request.GetExpectCompressed()); err != nil {
		return nil, err
	}
	if err := echoUnaryMetadata(ctx); err != nil {
		return nil, err
	}
	if err := echoStatus(request.GetResponseStatus()); err != nil {
		return nil, err
	}
	body, err := payload(request.GetResponseType(), request.GetResponseSize())
	if err != nil {
		return nil, err
	}
	return &pb.SimpleResponse{Payload: body}, nil
}

func (testService) StreamingInputCall(stream pb.TestService_StreamingInputCallServer) error {
	var total int32
	for {
		request, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(&pb.StreamingInputCallResponse{AggregatedPayloadSize: total})
		}
		if err != nil {
			return err
		}
		if err := checkCompressed(stream.Context(), request.GetExpectCompressed()); err != nil {
			return err
		}
		total += int32(len(request.GetPayload().GetBody()))
	}
}

func (testService) StreamingOutputCall(
	request *pb.StreamingOutputCallRequest, stream pb.TestService_StreamingOutputCallServer,
) error {
	if err := echoStreamMetadata(stream); err != nil {
		return err
	}
	return respond(request, stream)
}

func (testService) FullDuplexCall(stream pb.TestService_FullDuplexCallServer) error {
	if err := echoStreamMetadata(stream); err != nil {
		return err
	}
	for {
		request, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := respond(request, stream); err != nil {
			return err
		}
	}
}

// HalfDuplexCall is FullDuplexCall answering only once the client half-closed.
func (testService) HalfDuplexCall(stream pb.TestService_HalfDuplexCallServer) error {
	if err := echoStreamMetadata(stream); err != nil {
		return err
	}
	var received []*pb.StreamingOutputCallRequest
	for {
		request, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		received = append(received, request)
	}
	for _, request := range received {
		if err := respond(request, stream); err != nil {
			return err
		}
	}
	return nil
}

type responseSender interface {
	Send(*pb.StreamingOutputCallResponse) error
	Context() context.Context
}

// respond sends one response per ResponseParameters, each after its interval_us.
func respond(request *pb.StreamingOutputCallRequest, stream responseSender) error {
	if err := echoStatus(request.GetResponseStatus()); err != nil {
		return err
	}
	for _, parameters := range request.GetResponseParameters() {
		if err := sleep(stream.Context(), time.Duration(parameters.GetIntervalUs())*time.Microsecond); err != nil {
			return err
		}
		body, err := payload(request.GetResponseType(), parameters.GetSize())
		if err != nil {
			return err
		}
		if err := stream.Send(&pb.StreamingOutputCallResponse{Payload: body}); err != nil {
			return err
		}
	}
	return nil
}

// sleep waits for duration, or returns the call's status if the call ends first.
func sleep(ctx context.Context, duration time.Duration) error {
	if duration <= 0 {
		return nil
	}
	timer := time.NewTimer(duration)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}

func runServer(arguments []string) {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	port := flags.Int("port", 0, "port to listen on (0: any free port)")
	host := flags.String("host", "", "address to bind (default: all interfaces)")
	useTLS := flags.Bool("use_tls", false, "serve TLS")
	certFile := flags.String("tls_cert_file", "", "PEM certificate chain")
	keyFile := flags.String("tls_key_file", "", "PEM private key of --tls_cert_file")
	_ = flags.Parse(arguments)

	options := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMessageSize),
		grpc.StatsHandler(compressionStats{server: true}),
	}
	mode := "plaintext"
	if *useTLS {
		creds, err := credentials.NewServerTLSFromFile(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("cannot load the TLS certificate: %v", err)
		}
		options = append(options, grpc.Creds(creds))
		mode = "TLS"
	}
	listener, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		log.Fatalf("cannot listen on port %d: %v", *port, err)
	}
	server := grpc.NewServer(options...)
	pb.RegisterTestServiceServer(server, testService{})
	fmt.Printf("interop server listening on port %d (%s)\n", listener.Addr().(*net.TCPAddr).Port, mode)
	if err := server.Serve(listener); err != nil {
		log.Fatalf("serving: %v", err)
	}
}
