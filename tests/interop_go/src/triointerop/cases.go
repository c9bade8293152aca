package main

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // registers gzip, for UseCompressor("gzip")
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "triointerop/grpc_testing"
)

const (
	initialMetadataValue = "test_initial_metadata_value"
	trailingMetadataBin  = "\xab\xab\xab"
	specialMessage       = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
	veryLargePayload     = 10 * 1024 * 1024 // grpc-java's unaryPayloadLength()
)

func zeros(size int) *pb.Payload { return &pb.Payload{Body: make([]byte, size)} }

func checkPayload(body *pb.Payload, size int) error {
	if body.GetType() != pb.PayloadType_COMPRESSABLE {
		return fmt.Errorf("expected payload type COMPRESSABLE, got %v", body.GetType())
	}
	if len(body.GetBody()) != size {
		return fmt.Errorf("expected a %d-byte payload, got %d", size, len(body.GetBody()))
	}
	if !bytes.Equal(body.GetBody(), make([]byte, size)) {
		return fmt.Errorf("expected a payload of zeros")
	}
	return nil
}

// largeRequest is the spec's usual SimpleRequest: 314159 bytes wanted back for 271828 bytes of zeros.
func largeRequest() *pb.SimpleRequest {
	return &pb.SimpleRequest{ResponseType: pb.PayloadType_COMPRESSABLE, ResponseSize: 314159, Payload: zeros(271828)}
}

func outputRequest(payloadSize int, responseSizes ...int32) *pb.StreamingOutputCallRequest {
	request := &pb.StreamingOutputCallRequest{ResponseType: pb.PayloadType_COMPRESSABLE}
	if payloadSize > 0 {
		request.Payload = zeros(payloadSize)
	}
	for _, size := range responseSizes {
		request.ResponseParameters = append(request.ResponseParameters, &pb.ResponseParameters{Size: size})
	}
	return request
}

func emptyUnary(ctx context.Context, p peer) error {
	response, err := p.stub().EmptyCall(ctx, &pb.Empty{})
	if err == nil && response == nil {
		return fmt.Errorf("expected an Empty response, got none")
	}
	return err
}

func largeUnary(ctx context.Context, p peer) error {
	response, err := p.stub().UnaryCall(ctx, largeRequest())
	if err != nil {
		return err
	}
	return checkPayload(response.GetPayload(), 314159)
}

func clientCompressedUnary(ctx context.Context, p peer) error {
	stub := p.stub()
	// The probe: a server with the CompressedRequest feature refuses it, since it comes uncompressed.
	probe := largeRequest()
	probe.ExpectCompressed = &pb.BoolValue{Value: true}
	if _, err := stub.UnaryCall(ctx, probe); expectCode(err, codes.InvalidArgument) != nil {
		return fmt.Errorf("probe: %v", expectCode(err, codes.InvalidArgument))
	}
	for _, compressed := range []bool{true, false} {
		request := largeRequest()
		request.ExpectCompressed = &pb.BoolValue{Value: compressed}
		var options []grpc.CallOption
		if compressed {
			options = append(options, grpc.UseCompressor("gzip"))
		}
		response, err := stub.UnaryCall(ctx, request, options...)
		if err != nil {
			return fmt.Errorf("compressed=%v: %v", compressed, err)
		}
		if err := checkPayload(response.GetPayload(), 314159); err != nil {
			return err
		}
	}
	return nil
}

// acceptGzip announces that responses may come gzip-compressed: grpc-go 1.33 sends grpc-accept-encoding
// only on calls whose requests it compresses, and a server compresses only for clients that accept it.
func acceptGzip(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "grpc-accept-encoding", "gzip")
}

func serverCompressedUnary(ctx context.Context, p peer) error {
	for _, compressed := range []bool{true, false} {
		callCtx, arrived := withArrivals(acceptGzip(ctx))
		request := largeRequest()
		request.ResponseCompressed = &pb.BoolValue{Value: compressed}
		response, err := p.stub().UnaryCall(callCtx, request)
		if err != nil {
			return fmt.Errorf("response_compressed=%v: %v", compressed, err)
		}
		if err := checkPayload(response.GetPayload(), 314159); err != nil {
			return err
		}
		if arrived.last() != compressed {
			return fmt.Errorf("response_compressed=%v, but the response's compressed flag is %v", compressed, arrived.last())
		}
	}
	return nil
}

func clientStreaming(ctx context.Context, p peer) error {
	stream, err := p.stub().StreamingInputCall(ctx)
	if err != nil {
		return err
	}
	for _, size := range []int{27182, 8, 1828, 45904} {
		if err := stream.Send(&pb.StreamingInputCallRequest{Payload: zeros(size)}); err != nil {
			return fmt.Errorf("sending %d bytes: %v", size, err)
		}
	}
	response, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	if response.GetAggregatedPayloadSize() != 74922 {
		return fmt.Errorf("expected aggregated_payload_size 74922, got %d", response.GetAggregatedPayloadSize())
	}
	return nil
}

func clientCompressedStreaming(ctx context.Context, p peer) error {
	stub := p.stub()
	first := &pb.StreamingInputCallRequest{ExpectCompressed: &pb.BoolValue{Value: true}, Payload: zeros(27182)}
	probe, err := stub.StreamingInputCall(ctx)
	if err != nil {
		return err
	}
	_ = probe.Send(first) // io.EOF if the server refused it already; CloseAndRecv has the status
	if _, err := probe.CloseAndRecv(); expectCode(err, codes.InvalidArgument) != nil {
		return fmt.Errorf("probe: %v", expectCode(err, codes.InvalidArgument))
	}
	// grpc-go 1.33 compresses every message of a call that has a compressor and cannot opt one out, so
	// the second request (expect_compressed false) goes compressed too: the spec sends it uncompressed.
	stream, err := stub.StreamingInputCall(ctx, grpc.UseCompressor("gzip"))
	if err != nil {
		return err
	}
	second := &pb.StreamingInputCallRequest{ExpectCompressed: &pb.BoolValue{Value: false}, Payload: zeros(45904)}
	for _, request := range []*pb.StreamingInputCallRequest{first, second} {
		if err := stream.Send(request); err != nil {
			return fmt.Errorf("sending: %v", err)
		}
	}
	response, err := stream.CloseAndRecv()
	if err != nil {
		return err
	}
	if response.GetAggregatedPayloadSize() != 73086 {
		return fmt.Errorf("expected aggregated_payload_size 73086, got %d", response.GetAggregatedPayloadSize())
	}
	return nil
}

// receiveSizes reads one response per size from a server stream, then its end.
func receiveSizes(stream pb.TestService_StreamingOutputCallClient, sizes []int32) error {
	for index, size := range sizes {
		response, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("response %d of %d: %v", index+1, len(sizes), err)
		}
		if err := checkPayload(response.GetPayload(), int(size)); err != nil {
			return fmt.Errorf("response %d: %v", index+1, err)
		}
	}
	_, err := stream.Recv()
	return expectEnd(err, fmt.Sprintf("after %d responses", len(sizes)))
}

func serverStreaming(ctx context.Context, p peer) error {
	sizes := []int32{31415, 9, 2653, 58979}
	stream, err := p.stub().StreamingOutputCall(ctx, outputRequest(0, sizes...))
	if err != nil {
		return err
	}
	return receiveSizes(stream, sizes)
}

func serverCompressedStreaming(ctx context.Context, p peer) error {
	request := outputRequest(0)
	for _, parameters := range []*pb.ResponseParameters{
		{Size: 31415, Compressed: &pb.BoolValue{Value: true}},
		{Size: 92653, Compressed: &pb.BoolValue{Value: false}},
	} {
		request.ResponseParameters = append(request.ResponseParameters, parameters)
	}
	callCtx, arrived := withArrivals(acceptGzip(ctx))
	stream, err := p.stub().StreamingOutputCall(callCtx, request)
	if err != nil {
		return err
	}
	for _, parameters := range request.ResponseParameters {
		response, err := stream.Recv()
		if err != nil {
			return err
		}
		if err := checkPayload(response.GetPayload(), int(parameters.Size)); err != nil {
			return err
		}
		if want := parameters.Compressed.Value; arrived.last() != want {
			return fmt.Errorf("compressed=%v, but the response's compressed flag is %v", want, arrived.last())
		}
	}
	_, err = stream.Recv()
	return expectEnd(err, "after two responses")
}

func pingPong(ctx context.Context, p peer) error {
	stream, err := p.stub().FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	for _, sizes := range [][2]int{{31415, 27182}, {9, 8}, {2653, 1828}, {58979, 45904}} {
		if err := stream.Send(outputRequest(sizes[1], int32(sizes[0]))); err != nil {
			return fmt.Errorf("sending %d bytes: %v", sizes[1], err)
		}
		response, err := stream.Recv()
		if err != nil {
			return fmt.Errorf("the reply to %d bytes: %v", sizes[1], err)
		}
		if err := checkPayload(response.GetPayload(), sizes[0]); err != nil {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	_, err = stream.Recv()
	return expectEnd(err, "after four responses")
}

func emptyStream(ctx context.Context, p peer) error {
	stream, err := p.stub().FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	_, err = stream.Recv()
	return expectEnd(err, "expected zero responses")
}

func timeoutOnSleepingServer(ctx context.Context, p peer) error {
	callCtx, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	stream, err := p.stub().FullDuplexCall(callCtx)
	if err == nil {
		_ = stream.Send(outputRequest(27182)) // may fail already: the deadline is what the case checks
		_, err = stream.Recv()
	}
	return expectCode(err, codes.DeadlineExceeded)
}

func cancelAfterBegin(ctx context.Context, p peer) error {
	callCtx, cancel := context.WithCancel(ctx)
	stream, err := p.stub().StreamingInputCall(callCtx)
	if err != nil {
		cancel()
		return err
	}
	cancel()
	_, err = stream.CloseAndRecv()
	return expectCode(err, codes.Canceled)
}

func cancelAfterFirstResponse(ctx context.Context, p peer) error {
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := p.stub().FullDuplexCall(callCtx)
	if err != nil {
		return err
	}
	if err := stream.Send(outputRequest(27182, 31415)); err != nil {
		return err
	}
	if _, err := stream.Recv(); err != nil {
		return fmt.Errorf("expected a response before cancelling: %v", err)
	}
	cancel()
	_, err = stream.Recv()
	return expectCode(err, codes.Canceled)
}

func checkEchoedMetadata(method string, initial, trailing metadata.MD) error {
	if got := initial.Get(initialMetadataKey); len(got) != 1 || got[0] != initialMetadataValue {
		return fmt.Errorf("%s: expected %q in the initial metadata, got %q", method, initialMetadataValue, got)
	}
	if got := trailing.Get(trailingMetadataKey); len(got) != 1 || got[0] != trailingMetadataBin {
		return fmt.Errorf("%s: expected %q in the trailers, got %q", method, trailingMetadataBin, got)
	}
	return nil
}

func customMetadata(ctx context.Context, p peer) error {
	ctx = metadata.AppendToOutgoingContext(ctx,
		initialMetadataKey, initialMetadataValue, trailingMetadataKey, trailingMetadataBin)
	var initial, trailing metadata.MD
	response, err := p.stub().UnaryCall(ctx, largeRequest(), grpc.Header(&initial), grpc.Trailer(&trailing))
	if err != nil {
		return err
	}
	if err := checkPayload(response.GetPayload(), 314159); err != nil {
		return err
	}
	if err := checkEchoedMetadata("UnaryCall", initial, trailing); err != nil {
		return err
	}

	stream, err := p.stub().FullDuplexCall(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(outputRequest(271828, 314159)); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if initial, err = stream.Header(); err != nil {
		return err
	}
	reply, err := stream.Recv()
	if err != nil {
		return err
	}
	if err := checkPayload(reply.GetPayload(), 314159); err != nil {
		return err
	}
	if _, err := stream.Recv(); expectEnd(err, "FullDuplexCall: after one response") != nil {
		return expectEnd(err, "FullDuplexCall: after one response")
	}
	return checkEchoedMetadata("FullDuplexCall", initial, stream.Trailer())
}

// expectEchoedStatus checks that err is UNKNOWN with the message the request asked for.
func expectEchoedStatus(method string, err error, message string) error {
	if err := expectCode(err, codes.Unknown); err != nil {
		return fmt.Errorf("%s: %v", method, err)
	}
	if got := status.Convert(err).Message(); got != message {
		return fmt.Errorf("%s: expected the message %q, got %q", method, message, got)
	}
	return nil
}

func echoedStatus(message string) *pb.EchoStatus {
	return &pb.EchoStatus{Code: int32(codes.Unknown), Message: message}
}

func statusCodeAndMessage(ctx context.Context, p peer) error {
	const message = "test status message"
	_, err := p.stub().UnaryCall(ctx, &pb.SimpleRequest{ResponseStatus: echoedStatus(message)})
	if err := expectEchoedStatus("UnaryCall", err, message); err != nil {
		return err
	}
	stream, err := p.stub().FullDuplexCall(ctx)
	if err == nil {
		_ = stream.Send(&pb.StreamingOutputCallRequest{ResponseStatus: echoedStatus(message)})
		_ = stream.CloseSend()
		_, err = stream.Recv()
	}
	return expectEchoedStatus("FullDuplexCall", err, message)
}

func specialStatusMessage(ctx context.Context, p peer) error {
	_, err := p.stub().UnaryCall(ctx, &pb.SimpleRequest{ResponseStatus: echoedStatus(specialMessage)})
	return expectEchoedStatus("UnaryCall", err, specialMessage)
}

func unimplementedMethod(ctx context.Context, p peer) error {
	_, err := p.stub().UnimplementedCall(ctx, &pb.Empty{})
	return expectCode(err, codes.Unimplemented)
}

func unimplementedService(ctx context.Context, p peer) error {
	_, err := pb.NewUnimplementedServiceClient(p.conn).UnimplementedCall(ctx, &pb.Empty{})
	return expectCode(err, codes.Unimplemented)
}

func veryLargeRequest(ctx context.Context, p peer) error {
	request := &pb.SimpleRequest{
		ResponseType: pb.PayloadType_COMPRESSABLE, ResponseSize: 10, Payload: zeros(veryLargePayload),
	}
	response, err := p.stub().UnaryCall(ctx, request)
	if err != nil {
		return err
	}
	return checkPayload(response.GetPayload(), 10)
}

// flowControlLazyWindow is not in the spec. grpc-go returns receive window once a quarter of it (16,384
// of 65,535 bytes) has been consumed, so after a 16,000-byte response the server has 49,530 bytes of window
// and no promise of more: it must send the 50,000-byte response in pieces rather than wait for room for all
// of it. A fresh connection, so that no earlier case has grown the windows (grpc-go's BDP estimation).
func flowControlLazyWindow(ctx context.Context, p peer) error {
	conn, err := p.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	sizes := []int32{16000, 50000}
	stream, err := pb.NewTestServiceClient(conn).StreamingOutputCall(ctx, outputRequest(0, sizes...))
	if err != nil {
		return err
	}
	return receiveSizes(stream, sizes)
}
