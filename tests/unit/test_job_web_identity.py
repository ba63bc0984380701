"""spec.storage.credentials.webIdentity as far as one machine allows (issue 19 item 2): with the env
the operator gives the pod (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ENDPOINT_URL) and no key
pair, the job's own Storage makes boto3 call AssumeRoleWithWebIdentity with the projected token's
content and the role against the local endpoint, then signs its S3 requests with the credentials
STS returned; a refused assume ends as BadInput naming spec.storage.credentials.webIdentity.roleArn."""
from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from kubeslim_job.errors import BadInput
from kubeslim_job.storage import Storage

pytestmark = pytest.mark.unit

ROLE = "arn:aws:iam::123456789012:role/quantize"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.projected-token-for-sts.sig"
STS_KEY = "ASIAWEBIDENTITYTEST"
ASSUMED = f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>{STS_KEY}</AccessKeyId>
<SecretAccessKey>from-sts-secret</SecretAccessKey><SessionToken>from-sts-session</SessionToken>
<Expiration>2099-01-01T00:00:00Z</Expiration></Credentials>
<AssumedRoleUser><Arn>{ROLE}/s</Arn><AssumedRoleId>AROA:s</AssumedRoleId></AssumedRoleUser>
</AssumeRoleWithWebIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"""
REFUSED = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type>
<Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error>
<RequestId>2</RequestId></ErrorResponse>"""


class LocalAws:
    """STS (form POSTs to /) and S3 (a GET of any path-style object: 5 bytes) on one local port,
    recording what each was sent."""

    def __init__(self, refuse: bool):
        self.sts: list[dict[str, str]] = []
        self.s3_auth: list[str] = []
        aws = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                aws.sts.append({k: v[0] for k, v in urllib.parse.parse_qs(body).items()})
                answer = (REFUSED if refuse else ASSUMED).encode()
                self.send_response(403 if refuse else 200)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self):
                # Storage.size_of: a 1-byte ranged GET of a 5-byte object.
                aws.s3_auth.append(self.headers.get("Authorization", ""))
                self.send_response(206)
                self.send_header("Content-Range", "bytes 0-0/5")
                self.send_header("Content-Length", "1")
                self.end_headers()
                self.wfile.write(b"x")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pod_env(monkeypatch, tmp_path):
    """The job pod's env for webIdentity (jobs.py), isolated from this machine's AWS config."""
    def start(refuse: bool = False) -> LocalAws:
        aws = LocalAws(refuse)
        token = tmp_path / "token"
        token.write_text(TOKEN)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_CA_BUNDLE",
                     "AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL_S3", "AWS_ROLE_SESSION_NAME"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_ROLE_ARN", ROLE)
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
        monkeypatch.setenv("AWS_ENDPOINT_URL", aws.url)
        monkeypatch.setenv("KUBESLIM_S3_MAX_ATTEMPTS", "1")
        started.append(aws)
        return aws

    started: list[LocalAws] = []
    yield start
    for aws in started:
        aws.close()


def test_the_projected_token_reaches_sts_and_s3_is_signed_with_the_assumed_role(pod_env):
    aws = pod_env()
    storage = Storage(region="us-east-1", addressing_style="path")
    assert storage.size_of("s3://models/mv3/model.pdmodel", "spec.model.inference.uri") == 5
    (call,) = aws.sts
    assert call["Action"] == "AssumeRoleWithWebIdentity" and call["RoleArn"] == ROLE and call["WebIdentityToken"] == TOKEN
    (auth,) = aws.s3_auth
    assert f"Credential={STS_KEY}/" in auth


def test_a_refused_assume_names_the_role_field_and_not_the_token(pod_env):
    aws = pod_env(refuse=True)
    storage = Storage(region="us-east-1", addressing_style="path")
    with pytest.raises(BadInput) as err:
        storage.size_of("s3://models/mv3/model.pdmodel", "spec.model.inference.uri")
    assert aws.sts and not aws.s3_auth                       # STS asked, S3 never reached
    assert "spec.storage.credentials.webIdentity.roleArn" in str(err.value) and ROLE in str(err.value)
    assert TOKEN not in str(err.value)
