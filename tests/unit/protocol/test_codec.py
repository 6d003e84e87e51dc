"""The wire contract: every bad field is refused with its name and the problem; the version rule holds."""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import GOLDEN
from tinyfleet import protocol
from tinyfleet.protocol import codec, topics
from tinyfleet.protocol.errors import PayloadTooLarge, ProtocolError, UnsupportedVersion

DIGEST = "sha256:" + "ab" * 32
GOOD = {
    "v": "1.0", "kind": "desired", "sig": None,
    "body": {"device_id": "pi-1", "generation": 3,
             "apps": [{"name": "web", "image": f"127.0.0.1:5000/demo/web@{DIGEST}", "max_bytes": 1000,
                       "env": {"A": "1"}, "ports": [{"container_port": 80, "host_port": 8080}],
                       "health": {"settle_seconds": 1, "deadline_seconds": 10},
                       "limits": {"memory_bytes": 64 * 2**20, "cpus": 0.5}}]},
}


def with_change(path: str, value: object) -> bytes:
    """GOOD with one field replaced (value=DELETE removes it); path like body.apps.0.image."""
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return json.dumps(doc).encode()


DELETE = object()

BAD_FIELDS = [
    # (path to change, new value, field named in the error, words in the problem)
    ("body.generation", "3", "body.generation", "integer"),
    ("body.generation", True, "body.generation", "integer"),
    ("body.generation", -1, "body.generation", "outside"),
    ("body.generation", DELETE, "body.generation", "required"),
    ("body.device_id", "a/b", "body.device_id", "may hold only"),
    ("body.device_id", "+", "body.device_id", "may hold only"),
    ("body.device_id", "x" * 65, "body.device_id", "over the limit"),
    ("body.device_id", 7, "body.device_id", "string"),
    ("body.apps", {}, "body.apps", "list"),
    ("body.apps", [{}] * 33, "body.apps", "over the limit"),
    ("body.apps.0", "web", "body.apps[0]", "object"),
    ("body.apps.0.name", "Web_1", "body.apps[0].name", "does not match"),
    ("body.apps.0.image", "127.0.0.1:5000/demo/web:latest", "body.apps[0].image", "does not match"),
    ("body.apps.0.image", f"127.0.0.1:5000/demo/web@sha256:{'AB' * 32}", "body.apps[0].image", "does not match"),
    ("body.apps.0.max_bytes", 0, "body.apps[0].max_bytes", "outside"),
    ("body.apps.0.max_bytes", 1.5, "body.apps[0].max_bytes", "integer"),
    ("body.apps.0.env", ["A=1"], "body.apps[0].env", "object"),
    ("body.apps.0.env", {"1A": "x"}, "body.apps[0].env key", "does not match"),
    ("body.apps.0.env", {"A": 1}, "body.apps[0].env.A", "string"),
    ("body.apps.0.ports", [{"container_port": 0, "host_port": 1}], "body.apps[0].ports[0].container_port", "outside"),
    ("body.apps.0.ports", [{"container_port": 80, "host_port": 80, "protocol": "sctp"}],
     "body.apps[0].ports[0].protocol", "tcp or udp"),
    ("body.apps.0.restart", "sometimes", "body.apps[0].restart", "not one of"),
    ("body.apps.0.health", {"settle_seconds": 30, "deadline_seconds": 10}, "body.apps[0].health.deadline_seconds",
     "shorter"),
    ("body.apps.0.health", {"settle_seconds": float("nan")}, "body.apps[0].health.settle_seconds", "outside"),
    ("body.apps.0.limits", {"memory_bytes": 1024}, "body.apps[0].limits.memory_bytes", "outside"),
    ("body.apps.0.command", "serve", "body.apps[0].command", "list"),
    ("body.apps.0.nmae", "typo", "body.apps[0].nmae", "not a known field"),
    ("body.extra", 1, "body.extra", "not a known field"),
    ("sig", {"alg": "ed25519"}, "sig.key_id", "required"),
    ("kind", "desire", "kind", "not one of"),
    ("v", 1.0, "v", "string"),
    ("v", "one", "v", "MAJOR.MINOR"),
]


@pytest.mark.parametrize(("path", "value", "field", "problem"), BAD_FIELDS,
                         ids=[f"{p}={str(v)[:20]}" for p, v, *_ in BAD_FIELDS])
def test_bad_field_is_refused_naming_the_field(path: str, value: object, field: str, problem: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode(with_change(path, value))
    assert caught.value.field == field
    assert problem in caught.value.problem


def test_duplicate_app_names_are_refused() -> None:
    doc = copy.deepcopy(GOOD)
    doc["body"]["apps"].append(copy.deepcopy(doc["body"]["apps"][0]))
    with pytest.raises(ProtocolError, match="appears more than once"):
        protocol.decode(json.dumps(doc))


@pytest.mark.parametrize(("payload", "problem"), [
    (b"", "not JSON"),
    (b"{", "not JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[1, 2]", "JSON object"),
    (b"null", "JSON object"),
])
def test_garbage_payloads_are_refused(payload: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        protocol.decode(payload)
    assert problem in str(caught.value)


def test_oversized_payload_is_refused_before_parsing() -> None:
    payload = b'{"v": "1.0", "pad": "' + b"x" * codec.MAX_PAYLOAD_BYTES + b'"}'
    with pytest.raises(PayloadTooLarge) as caught:
        protocol.decode(payload)
    assert caught.value.size > caught.value.limit


def test_deep_nesting_within_the_cap_is_a_protocol_error_not_a_crash() -> None:
    payload = b'{"v": "1.0", "kind": "desired", "body": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    with pytest.raises(ProtocolError):
        protocol.decode(payload)


def test_encoding_an_oversized_message_is_refused() -> None:
    apps = tuple(protocol.AppSpec(f"app{i}", f"127.0.0.1:5000/x@{DIGEST}", env=(("K", "v" * 4000),))
                 for i in range(20))
    with pytest.raises(PayloadTooLarge):
        protocol.encode(protocol.DesiredState("pi-1", 1, apps))


def test_expecting_one_kind_refuses_another() -> None:
    with pytest.raises(ProtocolError, match="expected 'reported'"):
        protocol.decode(json.dumps(GOOD), expect=protocol.ReportedState)


def test_round_trip_keeps_every_field() -> None:
    desired = protocol.decode(json.dumps(GOOD))
    assert protocol.decode(protocol.encode(desired)) == desired


def test_spec_hash_changes_with_the_spec_and_only_then() -> None:
    app = protocol.decode(json.dumps(GOOD)).apps[0]
    again = protocol.decode(json.dumps(GOOD)).apps[0]
    changed = protocol.decode(with_change("body.apps.0.env", {"A": "2"})).apps[0]
    assert app.spec_hash() == again.spec_hash() != changed.spec_hash()


# --- the compatibility rule, on golden documents both sides decode --------------------------------

@pytest.mark.parametrize("name", ["desired-1.0", "desired-1.1-signed", "desired-1.2-signed-lock",
                                  "desired-1.4-lock-endpoint", "reported-1.0", "health-1.0", "status-1.0"])
def test_golden_documents_decode_and_round_trip(name: str) -> None:
    raw = (GOLDEN / f"{name}.json").read_bytes()
    message = protocol.decode(raw)
    assert message.kind == name.split("-")[0]
    assert protocol.decode(protocol.encode(message)) == message
    assert_contains(json.loads(protocol.encode(message))["body"], json.loads(raw)["body"])


def assert_contains(whole: object, part: object, where: str = "body") -> None:
    """Everything the golden document says survives decoding and re-encoding (defaults may be added)."""
    if isinstance(part, dict):
        assert isinstance(whole, dict), where
        for key, value in part.items():
            assert_contains(whole.get(key), value, f"{where}.{key}")
    elif isinstance(part, list):
        assert isinstance(whole, list) and len(whole) == len(part), where
        for i, (w, p) in enumerate(zip(whole, part, strict=True)):
            assert_contains(w, p, f"{where}[{i}]")
    else:
        assert whole == part, f"{where}: {whole!r} != {part!r}"


def test_golden_desired_reads_as_expected() -> None:
    desired = protocol.decode((GOLDEN / "desired-1.0.json").read_bytes())
    assert isinstance(desired, protocol.DesiredState)
    sensor = desired.app("sensor")
    assert sensor is not None and desired.generation == 7
    assert sensor.max_bytes == 1048576 and dict(sensor.env) == {"LOG_LEVEL": "info", "SITE": "north-3"}
    assert sensor.ports[0].host_ip == "127.0.0.1" and sensor.limits.cpus == 0.5
    relay = desired.app("relay")
    assert relay is not None and relay.max_bytes is None and relay.restart is protocol.RestartPolicy.UNLESS_STOPPED


def test_golden_update_lock_reads_as_expected() -> None:
    desired = protocol.decode((GOLDEN / "desired-1.2-signed-lock.json").read_bytes())
    assert isinstance(desired, protocol.DesiredState)
    sensor, relay = desired.app("sensor"), desired.app("relay")
    assert sensor is not None and sensor.update_lock == protocol.UpdateLockPolicy(max_wait_seconds=3600.0)
    assert relay is not None and relay.update_lock == protocol.UpdateLockPolicy(None)
    assert desired.force == ("relay",)


def test_golden_lock_endpoint_reads_as_expected() -> None:
    desired = protocol.decode((GOLDEN / "desired-1.4-lock-endpoint.json").read_bytes())
    assert isinstance(desired, protocol.DesiredState)
    sensor, relay = desired.app("sensor"), desired.app("relay")
    assert sensor is not None and sensor.update_lock == protocol.UpdateLockPolicy(
        max_wait_seconds=900.0, endpoint=protocol.LockEndpoint(8080, "/update-lock"))
    assert relay is not None and relay.update_lock is not None
    assert relay.update_lock.endpoint == protocol.LockEndpoint(9000, "/busy?who=relay")


@pytest.mark.parametrize("endpoint", [{"port": 0}, {"port": 70000}, {"path": "/x"}, {"port": 80, "path": "no-slash"},
                                      {"port": 80, "path": "/a b"}])
def test_a_lock_endpoint_needs_a_port_and_an_absolute_path(endpoint: dict[str, object]) -> None:
    with pytest.raises(protocol.ProtocolError, match="endpoint"):
        protocol.decode(with_change("body.apps.0.update_lock", {"endpoint": endpoint}))


def test_an_older_policy_encodes_without_an_endpoint() -> None:
    assert protocol.UpdateLockPolicy(60).to_dict() == {"max_wait_seconds": 60}


def test_the_update_lock_policy_does_not_change_the_spec_hash() -> None:
    app = protocol.decode(json.dumps(GOOD)).apps[0]
    locked = protocol.decode(with_change("body.apps.0.update_lock", {"max_wait_seconds": 60})).apps[0]
    assert locked.update_lock is not None and locked.spec_hash() == app.spec_hash()


def test_a_reported_lock_round_trips_and_is_absent_when_not_held() -> None:
    held = protocol.AppStatus("web", protocol.Phase.PENDING, locked=protocol.LockHeld("print-job-42", 1795000000.0,
                                                                                      1795003600.0))
    report = protocol.ReportedState("pi-1", 3, (held, protocol.AppStatus("db", protocol.Phase.RUNNING)))
    assert protocol.decode(protocol.encode(report)) == report
    assert "locked" not in json.loads(protocol.encode(report))["body"]["apps"][1]


def test_an_online_status_carries_the_connect_handshake_and_an_older_one_decodes_without_it() -> None:
    hello = protocol.Status("pi-1", online=True, generation=7)
    assert protocol.decode(protocol.encode(hello)) == hello
    older = (GOLDEN / "status-1.0.json").read_bytes()
    assert protocol.decode(older).generation is None  # type: ignore[union-attr]
    assert "generation" not in json.loads(protocol.encode(protocol.Status("pi-1", online=False)))["body"]


def test_newer_minor_is_applied_with_unknown_fields_ignored_and_listed() -> None:
    envelope = codec.open_envelope((GOLDEN / "desired-1.9-newer-minor.json").read_bytes())
    assert envelope.version == (1, 9)
    assert envelope.message.generation == 8  # type: ignore[union-attr]
    assert envelope.ignored == ("body.apps[0].update_strategy", "body.rollout_id", "trace")


def test_same_minor_with_unknown_field_is_an_error() -> None:
    doc = json.loads((GOLDEN / "desired-1.9-newer-minor.json").read_bytes())
    doc["v"] = codec.SCHEMA_VERSION
    with pytest.raises(ProtocolError, match="not a known field"):
        protocol.decode(json.dumps(doc))


def test_unknown_major_is_refused_with_advice() -> None:
    with pytest.raises(UnsupportedVersion, match="upgrade tinyfleet"):
        protocol.decode((GOLDEN / "desired-2.0-unknown-major.json").read_bytes())


# --- topics ---------------------------------------------------------------------------------------

def test_topics_are_versioned_and_parse_back() -> None:
    assert topics.desired("pi-1") == "tinyfleet/v1/devices/pi-1/desired"
    assert topics.parse("tinyfleet/v1/devices/pi-1/health") == ("pi-1", topics.Channel.HEALTH)
    assert topics.subscription(topics.Channel.REPORTED) == "tinyfleet/v1/devices/+/reported"


@pytest.mark.parametrize("topic", [
    "tinyfleet/v2/devices/pi-1/desired", "tinyfleet/v1/devices/pi-1", "tinyfleet/v1/devices/pi-1/desired/x",
    "tinyfleet/v1/devices/pi+1/desired", "tinyfleet/v1/devices/pi-1/telemetry", "tinyfleet/v1/devices//desired",
])
def test_bad_topics_are_refused(topic: str) -> None:
    with pytest.raises(ProtocolError):
        topics.parse(topic)


@pytest.mark.parametrize("device_id", ["", "#", "a+b", "a/b", ".hidden", "-x", "x" * 65, "ünï"])
def test_bad_device_ids_cannot_build_topics(device_id: str) -> None:
    with pytest.raises(ProtocolError):
        topics.desired(device_id)


# --- broker addresses ---------------------------------------------------------------------------

def test_broker_addresses_parse_with_defaults_and_keep_secrets_out_of_repr() -> None:
    from tinyfleet.protocol.broker import BrokerAddress
    a = BrokerAddress.parse("mqtts://ops:s3cret@fleet.example.com")
    assert (a.host, a.port, a.tls, a.username, a.password) == ("fleet.example.com", 8883, True, "ops", "s3cret")
    assert "s3cret" not in repr(a) and str(a) == "mqtts://fleet.example.com:8883"
    assert BrokerAddress.parse("mqtt://127.0.0.1", "dev", "pw").port == 1883


@pytest.mark.parametrize(("url", "problem"), [
    ("http://x", "must look like"), ("mqtt://", "must look like"), ("mqtt://x:99999", "port"),
    ("mqtt://u:pw@x", "not in the URL"),
])
def test_bad_broker_addresses_are_refused(url: str, problem: str) -> None:
    from tinyfleet.protocol.broker import BrokerAddress
    with pytest.raises(ProtocolError, match=problem) as caught:
        BrokerAddress.parse(url, credentials_in_url=False)
    assert "pw" not in str(caught.value)
