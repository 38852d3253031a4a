"""Tests of the Python client and of standard grpcio clients against a real switchyardd.

Run by the Rust end-to-end test tests/python_client.rs, which starts the daemon and
passes SWITCHYARD_TEST_SOCKET, SWITCHYARD_TEST_TCP, SWITCHYARD_TEST_TOKEN and
SWITCHYARD_TEST_ROOT (the repository, for models/ and golden/).
"""

import os
import unittest

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import switchyard
from switchyard._proto import switchyard_pb2 as pb
from switchyard._proto import switchyard_pb2_grpc as pb_grpc

SOCKET = os.environ["SWITCHYARD_TEST_SOCKET"]
TCP = os.environ["SWITCHYARD_TEST_TCP"]
TOKEN = os.environ["SWITCHYARD_TEST_TOKEN"]
ROOT = os.environ["SWITCHYARD_TEST_ROOT"]
FACE = "mp_face_detection_short_range"


def model_file(stem):
    return os.path.join(ROOT, "models", stem + ".tflite")


def golden(stem, name):
    return np.load(os.path.join(ROOT, "golden", stem, name + ".npy"))


class StandardGrpcClients(unittest.TestCase):
    """grpcio with default channel options: on the Unix socket C-core sends the socket
    path as :authority, which the daemon must accept."""

    def test_unix_socket_with_default_options(self):
        with grpc.insecure_channel(f"unix://{SOCKET}") as ch:
            status = pb_grpc.SwitchyardStub(ch).Status(pb.StatusRequest(), timeout=30)
            self.assertTrue(status.version)
            health = health_pb2_grpc.HealthStub(ch)
            for service in ("", "switchyard.v1.Switchyard"):
                r = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=30)
                self.assertEqual(r.status, health_pb2.HealthCheckResponse.SERVING, service)
            with self.assertRaises(grpc.RpcError) as e:
                health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
            self.assertEqual(e.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_reflection_answers_v1alpha_and_v1(self):
        with grpc.insecure_channel(f"unix:{SOCKET}") as ch:
            services = set(ProtoReflectionDescriptorDatabase(ch).get_services())
            self.assertIn("switchyard.v1.Switchyard", services)
            self.assertIn("grpc.health.v1.Health", services)
            # v1 has the same messages under another package name; grpcio-reflection
            # ships only v1alpha stubs, so call the v1 method with them.
            v1 = ch.stream_stream(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            (resp,) = list(v1(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
            names = {s.name for s in resp.list_services_response.service}
            self.assertIn("switchyard.v1.Switchyard", names)
            # And v1alpha through its own stub.
            alpha = reflection_pb2_grpc.ServerReflectionStub(ch)
            (resp,) = list(alpha.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="switchyard.v1.Switchyard")])
            ))
            self.assertTrue(resp.file_descriptor_response.file_descriptor_proto)

    def test_tcp_with_a_token(self):
        with grpc.insecure_channel(TCP) as ch:
            stub = pb_grpc.SwitchyardStub(ch)
            with self.assertRaises(grpc.RpcError) as e:
                stub.ListModels(pb.ListModelsRequest(), timeout=30)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            auth = (("authorization", f"Bearer {TOKEN}"),)
            tenants = stub.ListTenants(pb.ListTenantsRequest(), metadata=auth, timeout=30)
            self.assertEqual([t.id for t in tenants.tenants], ["token:python"])


class PythonClient(unittest.TestCase):
    def setUp(self):
        self.client = switchyard.Client.unix(SOCKET)
        self.addCleanup(self.client.close)

    def test_face_detection_matches_litert(self):
        model = self.client.load(model_file(FACE))
        self.assertEqual(model.inputs[0].shape, (1, 128, 128, 3))
        self.assertEqual(model.inputs[0].dtype, np.float32)
        frame = golden(FACE, "input_0")
        result = model.run([frame], priority=switchyard.Priority.REALTIME, deadline=30.0,
                           request_id="py-face-1")
        self.assertEqual(len(result), 2)
        for i, out in enumerate(result):
            want = golden(FACE, f"output_{i}")
            self.assertEqual(out.shape, want.shape)
            np.testing.assert_allclose(out, want, rtol=1e-3, atol=1e-3)
        self.assertGreater(result.run_us, 0)

    def test_shared_memory_inputs_and_outputs_equal_inline(self):
        model = self.client.load(model_file(FACE))
        frame = golden(FACE, "input_0")
        inline = model.run([frame])
        with self.client.shm_pool(1 << 20) as pool:
            x = pool.array(frame)
            outs = [pool.empty(o.shape, o.dtype) for o in model.outputs]
            result = model.run([x], outputs=outs)
            self.assertEqual(result.shm_lengths, [o.nbytes for o in outs])
            for a, b in zip(result, inline):
                np.testing.assert_array_equal(a, b)
            regions = self.client.status().regions
            self.assertGreaterEqual(regions, 1)

    def test_wrong_shape_is_refused_naming_both_shapes_unless_resized(self):
        model = self.client.load(model_file("mp_iris_landmark"))
        frame = golden(FACE, "input_0")  # 1x128x128x3; the iris model takes 1x64x64x3
        with self.assertRaises(switchyard.Error) as e:
            model.run([frame])
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        self.assertIn("[1, 64, 64, 3]", e.exception.message)
        self.assertIn("[1, 128, 128, 3]", e.exception.message)
        # The right shape runs.
        model.run([golden("mp_iris_landmark", "input_0")])

    def test_wrong_dtype_and_unknown_model_are_clean_errors(self):
        model = self.client.load(model_file(FACE))
        with self.assertRaises(switchyard.Error) as e:
            model.run([np.zeros((1, 128, 128, 3), np.int32)])
        self.assertEqual(e.exception.code, "INVALID_ARGUMENT")
        model.unload()
        with self.assertRaises(switchyard.Error) as e:
            model.run([golden(FACE, "input_0")])
        self.assertIn(e.exception.code, ("NOT_FOUND",))

    def test_priority_and_a_hopeless_deadline(self):
        model = self.client.load(model_file(FACE))
        x = golden(FACE, "input_0")
        fastest = min(model.run([x], priority=switchyard.Priority.BACKGROUND).run_us
                      for _ in range(2))
        # The daemon's estimate is the measured run time: a deadline far below it is
        # refused up front, with the reason.
        self.assertGreater(fastest, 1500, "too fast for a 1 ms deadline to be hopeless")
        with self.assertRaises(switchyard.Error) as e:
            model.run([x], priority=switchyard.Priority.REALTIME, deadline=0.001)
        self.assertEqual(e.exception.code, "DEADLINE_EXCEEDED")
        self.assertIn("deadline", e.exception.message)
        model.run([x], priority=switchyard.Priority.REALTIME, deadline=600.0)

    def test_a_session_streams_the_wake_word_model_like_litert(self):
        model = self.client.load(model_file("mww_okay_nabu"))
        self.assertTrue(model.stateful)
        steps = golden("mww_okay_nabu", "seq_input_0")
        want = golden("mww_okay_nabu", "seq_output_0.ref")
        with model.open_session() as session:
            got = [session.run([x])[0] for x in steps]
            for t, (g, w) in enumerate(zip(got, want)):
                diff = np.abs(g.astype(np.int32) - w.astype(np.int32)).max()
                self.assertLessEqual(diff, 1, f"step {t}")
            self.assertTrue(any(w.any() for w in want), "the sequence never fires")
            # A reset starts a fresh stream: step 0 again answers as at first.
            session.reset()
            np.testing.assert_array_equal(session.run([steps[0]])[0], got[0])
        # Closed: the id is unknown now.
        with self.assertRaises(switchyard.Error) as e:
            session.run([steps[0]])
        self.assertEqual(e.exception.code, "NOT_FOUND")


if __name__ == "__main__":
    unittest.main()
