"""A receiver that answers one header line at a time: every HTTP sink gives up at its
deadline for the whole request (a socket timeout per read never would), as a retryable
failure, and a move's Slack alert goes out while the CRM is still dripping."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
import time

import boto3
import pytest

from leadflow.adapters.dynamodb.ledger import DynamoDeliveryLedger
from leadflow.adapters.dynamodb.store import DynamoLeadStore
from leadflow.adapters.sinks import http
from leadflow.adapters.sinks.crm_webhook import WebhookSink
from leadflow.adapters.sinks.hubspot import HubSpotSink
from leadflow.adapters.sinks.salesforce import SalesforceSink
from leadflow.adapters.sinks.slack import SlackSink
from leadflow.adapters.sqs import SqsOutbox
from leadflow.domain.engine import apply_event, new_lead
from leadflow.domain.errors import RetryableError
from leadflow.domain.events import CanonicalEvent, finalise
from leadflow.domain.handoff import Notice
from leadflow.usecases.handoff import Handoff, RetryPolicy
from leadflow_infra.receivers import SlackReceiver
from tests.conftest import NOW
from tests.integration.conftest import TABLE

DEADLINE = 0.5  # the sinks' deadline in the timeout tests
EVERY = 0.2  # a header line this often: each read is quick, the answer never ends
LINES = 600  # two minutes of dripping, far past any deadline here
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BUYER = {"first_name": "Jane", "last_name": "Doe", "job_title": "VP Marketing", "company": "Acme", "company_size": 200,
         "industry": "software", "country": "US", "budget": "yes", "authority": "decision_maker",
         "need": "replace spreadsheets", "timeline": "this_quarter"}


class DripReceiver:
    """A real server on 127.0.0.1 that reads a request, sends the status line at once,
    then one `X-Drip: n` header line every `every` seconds and never the blank line that
    ends the headers (within `lines`). It notices the client hanging up."""

    def __init__(self, every: float = EVERY, lines: int = LINES, tls: ssl.SSLContext | None = None,
                 status: str = "200 OK"):
        self.every, self.lines, self.tls, self.status = every, lines, tls, status
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._open: list[socket.socket] = []
        self.connections = 0  # requests read
        self.hung_up = 0  # clients that closed the connection while it dripped
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self._listener.getsockname()[1]}"

    def wait(self, what, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not what():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"drip receiver: {self.connections} connections, {self.hung_up} hung up")
                self._changed.wait(left)

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._changed:
            for conn in self._open:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> DripReceiver:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with self._changed:
                self._open.append(conn)
            self._read_request(conn)
            with self._changed:
                self.connections += 1
                self._changed.notify_all()
            conn.sendall(f"HTTP/1.1 {self.status}\r\n".encode())
            conn.settimeout(self.every)
            for n in range(self.lines):
                if self._stop.is_set():
                    return
                try:
                    if conn.recv(1) == b"":  # the client hung up
                        with self._changed:
                            self.hung_up += 1
                            self._changed.notify_all()
                        return
                except (TimeoutError, ssl.SSLWantReadError):
                    pass
                conn.sendall(f"X-Drip: {n}\r\n".encode())
        except OSError:
            with self._changed:
                self.hung_up += 1
                self._changed.notify_all()
        finally:
            conn.close()

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = conn.recv(4096)
            if not chunk:
                return
            body += chunk


def notice() -> Notice:
    return Notice(move_id="tr_drip", lead_id="ld_drip", email="jane@acme.example", from_stage="mql", to_stage="sql",
                  occurred_at=NOW, score=87.0, fit_grade="A", engagement_score=42.5,
                  traits={"first_name": "Jane", "last_name": "Doe", "company": "Acme"},
                  lead={"lead_id": "ld_drip", "email": "jane@acme.example", "stage": "sql"})


SINKS = {
    "slack": lambda url: SlackSink(url + "/services/T000/B000/XXXX", timeout=DEADLINE),
    "webhook": lambda url: WebhookSink(url + "/crm", SECRET, timeout=DEADLINE),
    "hubspot": lambda url: HubSpotSink("pat-na1-test", base_url=url, timeout=DEADLINE),
    "salesforce": lambda url: SalesforceSink(url, "client-id", "client-secret", timeout=DEADLINE),  # the token drips
}


@pytest.mark.parametrize("name", sorted(SINKS))
def test_sink_gives_up_on_a_dripping_receiver_at_its_deadline_as_retryable(name):
    with DripReceiver() as drip:
        started = time.monotonic()
        with pytest.raises(RetryableError) as caught:
            SINKS[name](drip.url).deliver(notice())
        took = time.monotonic() - started
        drip.wait(lambda: drip.hung_up >= 1)  # and the connection is let go, not left dripping

    assert caught.value.status is None and f"timed out after {DEADLINE:g}s" in caught.value.reason
    assert drip.connections == 1
    assert took < EVERY * LINES / 4  # it did not sit through the drip (which lasts minutes)


def test_send_ends_at_the_callers_deadline_when_that_is_sooner_than_its_timeout():
    with DripReceiver() as drip:
        with pytest.raises(RetryableError) as caught:
            http.send("POST", drip.url + "/x", b"{}", {}, 60.0, what="webhook",
                      deadline=time.monotonic() + DEADLINE)

    assert "webhook: timed out after" in caught.value.reason and caught.value.status is None


def test_send_over_tls_gives_up_on_a_dripping_receiver_at_its_deadline(tmp_path, monkeypatch):
    server, client = tls_contexts(tmp_path)
    monkeypatch.setattr(ssl, "_create_default_https_context", lambda: client)  # trust the test's own CA

    with DripReceiver(tls=server) as drip:
        with pytest.raises(RetryableError) as caught:
            http.send("POST", drip.url + "/x", b"{}", {}, DEADLINE, what="webhook")
        drip.wait(lambda: drip.hung_up >= 1)

    assert drip.connections == 1 and f"timed out after {DEADLINE:g}s" in caught.value.reason


def test_move_alerts_slack_while_its_crm_receiver_is_still_dripping(aws):
    sqs = boto3.client("sqs")
    retry_url = sqs.create_queue(QueueName="retry")["QueueUrl"]
    dead_url = sqs.create_queue(QueueName="dead")["QueueUrl"]
    lead = sql_lead()
    results: dict[str, str] = {}
    # A 503 status line: when the receiver goes away mid-headers, what it said is "not now".
    with SlackReceiver() as slack, DripReceiver(status="503 Service Unavailable") as drip:
        # The CRM first in line, with a deadline far longer than the test needs.
        sinks = [WebhookSink(drip.url + "/crm", SECRET, timeout=60), SlackSink(slack.url + "/services/T/B/x", timeout=60)]
        handoff = Handoff(sinks, DynamoDeliveryLedger(TABLE, client=aws), SqsOutbox(retry_url, dead_url, client=sqs),
                          rules(), leads=DynamoLeadStore(TABLE, client=aws), policy=RetryPolicy(attempt_seconds=60))
        worker = threading.Thread(target=lambda: results.update(handoff.fan_out(lead, lead.moves)), daemon=True)
        worker.start()

        slack.wait_for(lambda r: "New SQL" in r.text, timeout=30)
        drip.wait(lambda: drip.connections >= 1)
        assert drip.hung_up == 0 and not results  # the CRM is still dripping; the move is not settled yet
        drip.stop()  # the receiver goes away: its delivery fails and is retried later
        worker.join(30)

    move = lead.moves[0]
    assert results == {f"{move}/webhook": "retry", f"{move}/slack": "sent"}
    ledger = DynamoDeliveryLedger(TABLE, client=aws)
    assert {d["sink"]: d["status"] for d in ledger.deliveries(lead.lead_id)} == {"webhook": "failed", "slack": "sent"}
    queue = sqs.get_queue_attributes(QueueUrl=retry_url, AttributeNames=["All"])["Attributes"]
    assert int(queue["ApproximateNumberOfMessages"]) + int(queue["ApproximateNumberOfMessagesDelayed"]) == 1
    assert len(slack.accepted) == 1


# -- helpers ------------------------------------------------------------------------------

def rules():
    from leadflow.settings import load_rules

    return load_rules(None)


def sql_lead():
    event = finalise(CanonicalEvent(type="form_submitted", email="jane@acme.example", event_id="e1",
                                    properties={"form_kind": "demo_request"}, traits=BUYER), now=NOW, source="test")
    lead = apply_event(new_lead("ld_drip", email="jane@acme.example", now=NOW), event, rules(), NOW).lead
    assert lead.stage == "sql" and len(lead.moves) == 1, lead.history
    return lead


def tls_contexts(directory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a self-signed certificate for 127.0.0.1, and a client
    context that trusts it (and checks the host name as usual)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client
