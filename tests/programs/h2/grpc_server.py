"""A gRPC server for tests/tests/h2.rs: grpcio's standard health service (no code
generation), over cleartext HTTP/2 on a kernel-chosen loopback port.

Service "periscope.Known" (and "") answer SERVING; any other service name is
NOT_FOUND (grpcio's HealthServicer.Check), which grpcio sends as a trailers-only
response. Prints "listening on HOST:PORT" once it listens, and "check SERVICE CODE"
for every Check it answers (its own log: the truth the spans are checked against).
"""
import sys
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


class LoggingHealth(health.HealthServicer):
    def Check(self, request, context):
        try:
            return super().Check(request, context)
        finally:
            code = context.code() or grpc.StatusCode.OK
            print(f"check {request.service} {code.value[0]}", flush=True)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer = LoggingHealth()
    servicer.set("periscope.Known", health_pb2.HealthCheckResponse.SERVING)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
