'use strict';
// What the interop server and client share: the TestService definitions loaded from the repository's
// proto/ directory, and flags spelled as the standard interop programs take them (--port=8080,
// --use_tls=true, --use_tls).

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');

// keepCase: the fields are read as the .proto spells them (response_size); enums as their names.
const definition = protoLoader.loadSync(path.join(PROTO_ROOT, 'grpc', 'testing', 'test.proto'), {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  enums: String,
  defaults: true,
});
const testing = grpc.loadPackageDefinition(definition).grpc.testing;

const ECHO_INITIAL_KEY = 'x-grpc-test-echo-initial';
const ECHO_TRAILING_KEY = 'x-grpc-test-echo-trailing-bin';

// `--name=value` or a bare `--name` (true) for each of `known`; anything else is a usage error.
function parseFlags(argv, known) {
  const flags = {};
  for (const argument of argv) {
    const match = /^--([a-z_]+)(?:=(.*))?$/.exec(argument);
    if (!match || !known.includes(match[1])) {
      usage(`unknown argument ${argument}; known flags: ${known.map((name) => `--${name}`).join(' ')}`);
    }
    flags[match[1]] = match[2] === undefined ? 'true' : match[2];
  }
  return flags;
}

function booleanFlag(flags, name) {
  const value = (flags[name] ?? 'false').toLowerCase();
  if (!['true', 'false', '1', '0'].includes(value)) {
    usage(`--${name} takes true or false, got ${flags[name]}`);
  }
  return value === 'true' || value === '1';
}

function usage(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

module.exports = { grpc, testing, ECHO_INITIAL_KEY, ECHO_TRAILING_KEY, parseFlags, booleanFlag, usage };
