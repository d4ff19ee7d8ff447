"""What the dashboard needs from the API: its files (open, with a strict CSP), GET /access,
and GET /jobs answering 304 while a page is unchanged. The page itself runs in a browser in
test_dashboard.py."""

from __future__ import annotations

from fastapi.testclient import TestClient
from test_service_api import REQUEST, assert_problem, run_next

from service import keys
from service.services import Services


def test_the_page_is_served_from_the_package(client: TestClient) -> None:
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 307 and home.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    script = client.get("/ui/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    again = client.get("/ui/app.js", headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304


def test_the_page_files_are_gzipped_for_clients_that_take_them(client: TestClient) -> None:
    plain = client.get("/ui/job.js", headers={"Accept-Encoding": "identity"})
    packed = client.get("/ui/job.js", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in plain.headers
    assert packed.headers["content-encoding"] == "gzip" and packed.text == plain.text
    assert packed.num_bytes_downloaded < len(plain.content) / 2
    assert packed.headers["content-security-policy"] == plain.headers["content-security-policy"]
    assert packed.headers["vary"] == "Accept-Encoding"
    tag = {"If-None-Match": packed.headers["etag"], "Accept-Encoding": "gzip"}
    assert client.get("/ui/job.js", headers=tag).status_code == 304


def test_the_page_needs_no_key_but_the_api_does(client: TestClient, services: Services) -> None:
    keys.create(services.sessions, "ops", "read")
    assert client.get("/ui/").status_code == 200
    assert client.get("/ui/style.css").status_code == 200
    assert_problem(client.get("/access"), 401, "API key is required")
    assert_problem(client.get("/jobs"), 401)
    assert_problem(client.get("/uinotthepage"), 401)


def test_nothing_outside_the_page_folder_is_served(client: TestClient) -> None:
    for path in ("/ui/../api/main.py", "/ui/%2e%2e/api/main.py", "/ui/..%2fcli.py"):
        response = client.get(path)
        assert response.status_code in (401, 404), path
        assert "import" not in response.text


def test_access_says_what_a_key_may_do(client: TestClient, services: Services) -> None:
    assert client.get("/access").json() == {"keys_required": False, "scope": "write"}
    _, read = keys.create(services.sessions, "board", "read")
    _, write = keys.create(services.sessions, "ci", "write")
    for key, scope in ((read, "read"), (write, "write")):
        answer = client.get("/access", headers={"Authorization": f"Bearer {key}"})
        assert answer.json() == {"keys_required": True, "scope": scope}


def test_a_page_of_jobs_is_304_until_one_changes(client: TestClient, services: Services) -> None:
    first = client.get("/jobs")
    assert first.status_code == 200 and first.json()["jobs"] == []
    tag = first.headers["etag"]
    unchanged = client.get("/jobs", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.headers["etag"] == tag
    assert unchanged.headers["vary"] == "Accept-Encoding"
    job_id = client.post("/transplant", json=REQUEST).json()["id"]
    new = client.get("/jobs", headers={"If-None-Match": tag})
    assert new.status_code == 200 and [j["id"] for j in new.json()["jobs"]] == [job_id]
    tag = new.headers["etag"]
    run_next(services)  # the same job, changed: the page changed
    done = client.get("/jobs", headers={"If-None-Match": tag})
    assert done.status_code == 200 and done.json()["jobs"][0]["status"] == "succeeded"
    assert done.headers["retry-after"] == "2"
    other = client.get("/jobs?status=queued", headers={"If-None-Match": done.headers["etag"]})
    assert other.status_code == 200  # another page (here: empty) has another tag


def test_a_page_of_jobs_is_gzipped_for_clients_that_take_it(client: TestClient) -> None:
    for _ in range(3):
        client.post("/transplant", json=REQUEST)
    packed = client.get("/jobs", headers={"Accept-Encoding": "gzip, br"})
    assert packed.headers["content-encoding"] == "gzip" and len(packed.json()["jobs"]) == 3
    assert int(packed.headers["content-length"]) < len(packed.content)  # httpx decoded it
    for refused in ("identity", "gzip;q=0, identity", "br"):
        plain = client.get("/jobs", headers={"Accept-Encoding": refused})
        assert "content-encoding" not in plain.headers and plain.json() == packed.json()
        assert plain.headers["vary"] == "Accept-Encoding"
