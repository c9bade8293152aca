'use strict';
// The gRPC interop TestService on grpc-js, as doc/interop-test-descriptions.md ("Server") describes it.
//
//   node server.js --port=8080 [--use_tls=true --tls_cert_file=server1.pem --tls_key_file=server1.key]
//
// --port=0 takes any free port; once listening, the server prints one line to stdout:
//   interop server listening on port 43121 (plaintext)
//
// Implemented: EmptyCall, UnaryCall, StreamingInputCall, StreamingOutputCall, FullDuplexCall,
// HalfDuplexCall, Echo Status, Echo Metadata and ResponseParameters.interval_us. UnimplementedCall is left
// out on purpose (the unimplemented_method case expects UNIMPLEMENTED for it).
// Not implementable on grpc-js, which hides both from the application:
// - CompressedRequest: the server never learns whether a request arrived compressed (it strips
//   grpc-encoding from the metadata and keeps the per-message flag to itself), so expect_compressed is
//   accepted as is and the uncompressed probe of client_compressed_* cannot be refused;
// - CompressedResponse: grpc-js servers never compress a response, so response_compressed and
//   ResponseParameters.compressed are ignored.

const fs = require('node:fs');
const { setTimeout: sleep } = require('node:timers/promises');
const {
  grpc,
  testing,
  ECHO_INITIAL_KEY,
  ECHO_TRAILING_KEY,
  parseFlags,
  booleanFlag,
  usage,
} = require('./common.js');

// very_large_request sends 10 MiB; grpc-js refuses more than 4 MiB by default.
const MAX_MESSAGE_SIZE = 16 * 1024 * 1024;

class StatusError extends Error {
  constructor(code, details) {
    super(details);
    this.code = code;
    this.details = details;
  }
}

function payload(type, size) {
  if (type !== 'COMPRESSABLE') {
    throw new StatusError(grpc.status.INVALID_ARGUMENT, `unsupported response_type ${type}`);
  }
  return { type, body: Buffer.alloc(size) };
}

// Echo Status: a request's response_status with a code other than OK ends the call with it.
function checkEchoStatus(request) {
  const status = request.response_status;
  if (status && status.code !== grpc.status.OK) {
    throw new StatusError(status.code, status.message);
  }
}

// Echo Metadata: the echo-initial key goes back as initial metadata now; the echo-trailing-bin key is
// returned to be sent with the status.
function echoMetadata(call) {
  const initial = call.metadata.get(ECHO_INITIAL_KEY);
  if (initial.length > 0) {
    const echoed = new grpc.Metadata();
    echoed.set(ECHO_INITIAL_KEY, initial[0]);
    call.sendMetadata(echoed);
  }
  const trailers = new grpc.Metadata();
  const trailing = call.metadata.get(ECHO_TRAILING_KEY);
  if (trailing.length > 0) {
    trailers.set(ECHO_TRAILING_KEY, trailing[0]);
  }
  return trailers;
}

// A unary or client-streaming handler: `respond` computes the response or throws a StatusError.
function unaryHandler(respond) {
  return (call, callback) => {
    const trailers = echoMetadata(call);
    respond(call).then(
      (response) => callback(null, response, trailers),
      (error) => callback(asStatus(error, trailers)),
    );
  };
}

// A server-streaming or bidi handler: `respond` writes the responses or throws a StatusError.
function streamingHandler(respond) {
  return (call) => {
    const trailers = echoMetadata(call);
    respond(call).then(
      () => call.end(trailers),
      (error) => {
        if (!call.cancelled) {
          call.emit('error', asStatus(error, trailers));
        }
      },
    );
  };
}

function asStatus(error, trailers) {
  if (error instanceof StatusError) {
    return { code: error.code, details: error.details, metadata: trailers };
  }
  return {
    code: grpc.status.INTERNAL,
    details: `handler failed: ${error.stack ?? error}`,
    metadata: trailers,
  };
}

// The requests of a bidi call. A plain `for await` destroys the stream when the requests end, before the
// handler has written its responses and status.
function requests(call) {
  return call.iterator({ destroyOnReturn: false });
}

// One response per ResponseParameters, each after its interval_us; a write waits while grpc-js's buffer
// is full, so a slow reader holds the handler back instead of filling memory.
async function respondTo(request, call) {
  checkEchoStatus(request);
  for (const parameters of request.response_parameters) {
    if (parameters.interval_us > 0) {
      await sleep(parameters.interval_us / 1000);
    }
    if (call.cancelled) {
      return;
    }
    if (!call.write({ payload: payload(request.response_type, parameters.size) })) {
      await new Promise((resolve) => call.once('drain', resolve));
    }
  }
}

const handlers = {
  EmptyCall: unaryHandler(async () => ({})),

  UnaryCall: unaryHandler(async (call) => {
    const request = call.request;
    checkEchoStatus(request);
    return { payload: payload(request.response_type, request.response_size) };
  }),

  CacheableUnaryCall: unaryHandler(async () => ({
    payload: { type: 'COMPRESSABLE', body: Buffer.from(String(process.hrtime.bigint())) },
  })),

  StreamingInputCall: unaryHandler(async (call) => {
    let total = 0;
    for await (const request of call) {
      total += request.payload ? request.payload.body.length : 0;
    }
    return { aggregated_payload_size: total };
  }),

  StreamingOutputCall: streamingHandler((call) => respondTo(call.request, call)),

  FullDuplexCall: streamingHandler(async (call) => {
    for await (const request of requests(call)) {
      await respondTo(request, call);
    }
  }),

  // Like FullDuplexCall, but answers only after the client half-closed.
  HalfDuplexCall: streamingHandler(async (call) => {
    const received = [];
    for await (const request of requests(call)) {
      received.push(request);
    }
    for (const request of received) {
      await respondTo(request, call);
    }
  }),
};

function credentials(flags) {
  if (!booleanFlag(flags, 'use_tls')) {
    return grpc.ServerCredentials.createInsecure();
  }
  if (!flags.tls_cert_file || !flags.tls_key_file) {
    usage('--use_tls=true needs --tls_cert_file and --tls_key_file');
  }
  const keyPair = {
    cert_chain: fs.readFileSync(flags.tls_cert_file),
    private_key: fs.readFileSync(flags.tls_key_file),
  };
  return grpc.ServerCredentials.createSsl(null, [keyPair], false);
}

function main() {
  const flags = parseFlags(process.argv.slice(2), [
    'port',
    'host',
    'use_tls',
    'tls_cert_file',
    'tls_key_file',
  ]);
  if (flags.port === undefined || !/^\d+$/.test(flags.port)) {
    usage('--port=N is required (0: any free port)');
  }
  const server = new grpc.Server({
    'grpc.max_receive_message_length': MAX_MESSAGE_SIZE,
    'grpc.max_send_message_length': MAX_MESSAGE_SIZE,
  });
  const { UnimplementedCall, ...implemented } = testing.TestService.service;
  server.addService(implemented, handlers);
  const address = `${flags.host ?? '0.0.0.0'}:${flags.port}`;
  server.bindAsync(address, credentials(flags), (error, port) => {
    if (error) {
      process.stderr.write(`error: cannot serve on ${address}: ${error.message}\n`);
      process.exit(1);
    }
    const kind = booleanFlag(flags, 'use_tls') ? 'TLS' : 'plaintext';
    process.stdout.write(`interop server listening on port ${port} (${kind})\n`);
  });
}

main();
