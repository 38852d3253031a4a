# The gRPC stubs (switchyard_pb2, switchyard_pb2_grpc) are generated here at build time
# from proto/proto/switchyard.proto; see setup.py.
