"""The event loop never waits on API input: PEM is split in linear time, bodies and PEM
fields are capped (clear 413/400), and certificate checks run in a worker process with a
time bound. Hostile certificates are POSTed while plain GETs must keep answering."""
import threading
import time
from pathlib import Path

import orjson
import pytest
import requests
import trustme

from control import certificates
from control.api import auth
from control.certificate_worker import CHECK_TIMEOUT_S
from tests.apihttp import SCW, ApiDaemon

SLOW_KEY = Path(__file__).parent / "data" / "rsa16384.key.pem"   # validating it takes far longer than the bound
LIVENESS_S = 2.0


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("limits"))
    d.lb = d.api.ok(d.api.scw("POST", "/lbs", {"name": "limits", "description": ""}))
    yield d
    d.close()


def hostile_begins(n: int) -> str:
    """What made the old regex quadratic: BEGIN lines that never END."""
    return "-----BEGIN CERTIFICATE-----\nAAAA\n" * n


def leaf_pems() -> tuple[str, str]:
    leaf = trustme.CA().issue_cert("limits.example.com")
    return leaf.cert_chain_pems[0].bytes().decode(), leaf.private_key_pem.bytes().decode()


def while_polling(srv, action) -> tuple[object, list[float]]:
    """Run `action()` while another thread GETs the lbs list; the GETs' durations."""
    took, done = [], threading.Event()

    def poll():
        session = requests.Session()
        while not done.is_set():
            t0 = time.monotonic()
            r = session.get(srv.api.base + SCW + "/lbs", headers={"X-Auth-Token": srv.api.token}, timeout=30)
            assert r.status_code == 200
            took.append(time.monotonic() - t0)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        time.sleep(0.2)
        result = action()
        time.sleep(0.2)
    finally:
        done.set()
        poller.join()
    return result, took


def post_chain(srv, text: str) -> requests.Response:
    return srv.api.scw("POST", f"/lbs/{srv.lb['id']}/certificates",
                       {"name": "hostile", "custom_certificate": {"certificate_chain": text}}, timeout=60)


def test_pem_splitting_is_linear():
    chain, key = leaf_pems()
    assert [label for label, _ in certificates.pem_blocks(chain + key)] == ["CERTIFICATE", "EC PRIVATE KEY"]
    assert certificates.pem_blocks(hostile_begins(3) + chain) == [("CERTIFICATE", chain.strip())]
    t0 = time.monotonic()
    assert certificates.pem_blocks(hostile_begins(120_000)) == []     # 4 MB: the old regex took hours
    assert time.monotonic() - t0 < LIVENESS_S


def test_hostile_chains_get_a_400_while_gets_answer(srv):
    def attack():
        return [post_chain(srv, hostile_begins(n)) for n in (3_500, 8_000)]   # under and over the cap
    (under, over), took = while_polling(srv, attack)
    assert under.status_code == 400 and "no PEM certificate" in under.json()["details"][0]["help_message"]
    assert over.status_code == 400
    assert over.json()["details"][0]["argument_name"] == "custom_certificate.certificate_chain"
    assert "longer than" in over.json()["details"][0]["help_message"]
    assert took and max(took) < LIVENESS_S
    assert srv.api.ok(srv.api.scw("GET", f"/lbs/{srv.lb['id']}/certificates"))["total_count"] == 0


def test_a_slow_key_is_cut_off_while_gets_answer(srv):
    chain, _ = leaf_pems()
    slow = SLOW_KEY.read_text()
    t0 = time.monotonic()
    r, took = while_polling(srv, lambda: post_chain(srv, chain + slow))
    assert r.status_code == 400, r.text
    assert f"longer than {CHECK_TIMEOUT_S:g}s" in r.json()["details"][0]["help_message"]
    assert time.monotonic() - t0 < CHECK_TIMEOUT_S + 5
    assert took and max(took) < LIVENESS_S
    # the worker was replaced: a good certificate goes in afterwards
    chain, key = leaf_pems()
    made = srv.api.ok(post_chain(srv, chain + key))
    assert made["status"] == "ready"
    assert srv.api.scw("DELETE", f"/certificates/{made['id']}").status_code == 204


def test_the_native_config_checks_certificates_off_the_loop(srv):
    doc = srv.file()
    chain, _ = leaf_pems()
    doc["lbs"] = [{"name": "tls", "certificates": [{"name": "c", "chain_pem": chain, "key_pem": SLOW_KEY.read_text()}]}]
    before = srv.config_path.read_bytes()
    r, took = while_polling(srv, lambda: srv.api.request(
        "PUT", "/lbfast/v1/config", data=orjson.dumps(doc), timeout=60,
        headers={"Authorization": f"Bearer {srv.api.token}", "Content-Type": "application/json"}))
    assert r.status_code == 400
    assert r.json()["problems"][0]["field"] == "lbs[0].certificates[0].chain_pem"
    assert took and max(took) < LIVENESS_S
    assert srv.config_path.read_bytes() == before


def test_a_body_over_the_cap_is_a_413(srv):
    big = b'{"name": "' + b"x" * (auth.MAX_BODY_BYTES + 1) + b'"}'
    headers = {"X-Auth-Token": srv.api.token, "Content-Type": "application/json"}
    r = srv.api.request("POST", SCW + "/lbs", data=big, headers=headers)
    assert r.status_code == 413 and "larger than" in r.json()["message"]
    # a chunked body has no length to refuse up front: it is cut off while read
    r = srv.api.request("POST", SCW + "/lbs", data=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]),
                        headers=headers)
    assert r.status_code == 413 and "larger than" in r.json()["message"]
    r = srv.api.request("POST", "/v4/nodebalancers", data=big,
                        headers={"Authorization": f"Bearer {srv.api.token}", "Content-Type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["errors"][0]["reason"]


def test_linode_ssl_keys_are_checked_off_the_loop(srv):
    api = srv.api
    nb = api.ok(api.linode("POST", "/v4/nodebalancers", {"region": "local", "label": "limits-nb"}))
    chain, _ = leaf_pems()
    r, took = while_polling(srv, lambda: api.linode("POST", f"/v4/nodebalancers/{nb['id']}/configs", {
        "port": 19443, "protocol": "https", "ssl_cert": chain, "ssl_key": SLOW_KEY.read_text()}, timeout=60))
    assert r.status_code == 400 and f"longer than {CHECK_TIMEOUT_S:g}s" in r.json()["errors"][0]["reason"]
    assert took and max(took) < LIVENESS_S
    assert api.ok(api.linode("GET", f"/v4/nodebalancers/{nb['id']}/configs"))["results"] == 0
    api.ok(api.linode("DELETE", f"/v4/nodebalancers/{nb['id']}"))
