"""GetPluginInfo over a unix socket from Python grpcio (gRPC C-core), a client that sends
the socket's path as :authority. Prints the plugin name once per channel set-up: grpcio's
default authority, and the socket path set explicitly (what C-core sends on its own in some
versions). Raw bytes, so no generated code is needed: GetPluginInfoRequest is empty, and the
response's field 1 (tag 0x0a) is the name."""

import sys

import grpc

socket = sys.argv[1]
for options in ([], [("grpc.default_authority", socket)]):
    with grpc.insecure_channel(f"unix://{socket}", options=options) as channel:
        call = channel.unary_unary(
            "/csi.v1.Identity/GetPluginInfo",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        response = call(b"", timeout=20)
        if len(response) < 2 or response[0] != 0x0A:
            sys.exit(f"unexpected GetPluginInfoResponse bytes: {response!r}")
        print(response[2 : 2 + response[1]].decode())
