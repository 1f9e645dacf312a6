"""Who may see /status: nothing of the page, its data or its files without the API token
(401, a Basic challenge for the page, JSON for the data), never a token in the HTML or
accepted from a URL; HTTP Basic with the token as password, or the login form's
HttpOnly SameSite=Strict session cookie; no inline script allowed by the CSP. Without a
token configured, the one the daemon generated is the key."""
import base64
import re

import pytest
import requests

from tests.apihttp import TOKEN, ApiDaemon

PATHS = ("/status", "/status.json", "/status/static/status.js", "/status/static/status.css")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    d = ApiDaemon(tmp_path_factory.mktemp("status-auth"))
    yield d
    d.close()


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_nothing_without_the_token(srv):
    base = srv.api.base
    wrong = [{}, basic("admin", "wrong"), basic(TOKEN, ""), {"Authorization": "Bearer wrong"},
             {"Authorization": "Basic !!notbase64"}, {"Cookie": "lbfast_status=" + TOKEN}]
    for path in PATHS:
        for headers in wrong:
            r = requests.get(base + path, headers=headers, timeout=5)
            assert r.status_code == 401, (path, headers, r.status_code)
            assert TOKEN not in r.text
    page = requests.get(base + "/status", timeout=5)
    assert page.headers["WWW-Authenticate"].startswith("Basic ")
    assert page.headers["Content-Type"].startswith("text/html")
    data = requests.get(base + "/status.json", timeout=5)
    assert data.json() == {"error": "Invalid Token"}
    assert not data.headers["WWW-Authenticate"].startswith("Basic")   # fetch() must not pop a dialog
    # a token in the URL is never taken
    for query in (f"?token={TOKEN}", f"?api_token={TOKEN}", f"?access_token={TOKEN}"):
        assert requests.get(base + "/status.json" + query, timeout=5).status_code == 401
    # refused looks took no sample: the first allowed look is the first sample
    assert len(requests.get(base + "/status.json", headers=basic("", TOKEN), timeout=5).json()["history"]["t"]) == 1


def test_basic_auth_and_the_page_it_gets(srv):
    base = srv.api.base
    page = requests.get(base + "/status", headers=basic("anyone", TOKEN), timeout=5)
    assert page.status_code == 200
    assert TOKEN not in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts and all(" src=" in s for s in scripts)        # no inline script
    assert not re.search(r"\son\w+\s*=", page.text)             # no inline event handlers
    assert "http://" not in page.text and "https://" not in page.text   # nothing from elsewhere (no CDN)
    for path in PATHS[1:]:
        assert requests.get(base + path, headers=basic("", TOKEN), timeout=5).status_code == 200
    assert requests.get(base + "/status.json", headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout=5).json()["lbs"] == []


def test_login_form_sets_a_session_cookie(srv):
    base = srv.api.base
    s = requests.Session()
    refused = s.post(base + "/status/login", data={"token": "wrong"}, allow_redirects=False, timeout=5)
    assert refused.status_code == 401 and "lbfast_status" not in s.cookies
    foreign = s.post(base + "/status/login", data={"token": TOKEN}, headers={"Origin": "http://evil.example"},
                     allow_redirects=False, timeout=5)
    assert foreign.status_code == 403 and "lbfast_status" not in s.cookies
    ok = s.post(base + "/status/login", data={"token": TOKEN}, allow_redirects=False, timeout=5)
    assert ok.status_code == 303 and ok.headers["Location"] == "/status"
    cookie = ok.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert TOKEN not in cookie                                   # a session id, not the token
    assert s.get(base + "/status.json", timeout=5).status_code == 200
    assert s.get(base + "/status", timeout=5).status_code == 200
    s.post(base + "/status/logout", allow_redirects=False, timeout=5)
    stale = requests.get(base + "/status.json", cookies={"lbfast_status": ok.cookies["lbfast_status"]}, timeout=5)
    assert stale.status_code == 401


def test_no_token_configured_means_the_generated_one(tmp_path):
    d = ApiDaemon(tmp_path, token="")
    try:
        generated = d.api.token
        for path in PATHS:
            r = requests.get(d.api.base + path, timeout=5)
            assert r.status_code == 401, (path, r.status_code)
            assert generated not in r.text
            assert requests.get(d.api.base + path, headers=basic("", generated), timeout=5).status_code == 200
        assert requests.post(d.api.base + "/status/login", data={"token": ""}, timeout=5,
                             allow_redirects=False).status_code == 401
    finally:
        d.close()
