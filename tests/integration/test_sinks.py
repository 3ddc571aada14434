"""Each sink against a real HTTP receiver (or moto for AWS): the request the vendor
documents, the receipt, and how every kind of failure is classified for the dispatcher."""

from __future__ import annotations

import json
import socket
import time
from email.utils import formatdate
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto import mock_aws
from standardwebhooks.webhooks import Webhook

from leadflow.domain.handoff import Notice, Owner
from leadflow.adapters.sinks import http
from leadflow.domain.errors import PermanentError, RetryableError
from leadflow.adapters.sinks.ses import EmailSink
from leadflow.adapters.sinks.eventbridge import EventBridgeSink
from leadflow.adapters.sinks.hubspot import HubSpotSink
from leadflow.adapters.sinks.salesforce import SalesforceSink
from leadflow.adapters.sinks.slack import SlackSink, post
from leadflow.adapters.sinks.slack_blocks import decided_message
from leadflow.adapters.sinks.crm_webhook import WebhookSink
from leadflow.domain.handoff import move_document as payload
from tests.conftest import NOW
from leadflow_infra.receivers import HubSpotReceiver, Receiver, Reply, SalesforceReceiver, SlackReceiver, WebhookReceiver

FAST = 0.3  # client timeout for the timeout tests: the receivers hold requests for longer
HOLD = 1.0
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HUBSPOT_TOKEN = "pat-na1-test"
SLACK_PATH = "/services/T000/B000/XXXX"
OWNER = Owner(id="rep-1", name="Sam Seller", email="sam@vendor.example", slack_user="U012AB3CD",
              hubspot_owner_id="501", salesforce_owner_id="005000000000001AAA")


def make_notice(**overrides: Any) -> Notice:
    fields: dict[str, Any] = {
        "move_id": "tr_0001",
        "lead_id": "ld_0123456789abcdef01234567",
        "email": "jane@acme.example",
        "from_stage": "mql",
        "to_stage": "sql",
        "occurred_at": NOW,
        "score": 87.0,
        "fit_grade": "A",
        "engagement_score": 42.5,
        "reasons": [{"rule": "seniority_executive", "points": 30, "detail": "VP or C-level title"}],
        "traits": {"first_name": "Jane", "last_name": "Doe", "company": "Acme", "job_title": "VP Marketing",
                   "country": "DE"},
        "owner": OWNER,
        "lead": {"lead_id": "ld_0123456789abcdef01234567", "email": "jane@acme.example", "stage": "sql",
                 "traits": {"first_name": "Jane", "company": "Acme"}, "score": 87.0},
    }
    fields.update(overrides)
    return Notice(**fields)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def slack():
    with SlackReceiver() as receiver:
        yield receiver


@pytest.fixture
def hubspot():
    with HubSpotReceiver(HUBSPOT_TOKEN) as receiver:
        yield receiver


@pytest.fixture
def salesforce():
    with SalesforceReceiver("client-id", "client-secret") as receiver:
        yield receiver


@pytest.fixture
def webhook():
    with WebhookReceiver(SECRET) as receiver:
        yield receiver


def sf_sink(receiver: SalesforceReceiver, **kwargs: Any) -> SalesforceSink:
    return SalesforceSink(receiver.url, "client-id", "client-secret", **kwargs)


# ---------------------------------------------------------------- the HTTP helper


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503])
def test_raise_for_not_now_statuses_raises_retryable(status):
    with pytest.raises(RetryableError) as caught:
        http.raise_for(http.Response(status, {}, b"busy"), "thing")
    assert caught.value.status == status and "HTTP %d" % status in caught.value.reason


@pytest.mark.parametrize("status", [300, 400, 401, 403, 404, 410, 422])
def test_raise_for_other_statuses_raises_permanent(status):
    with pytest.raises(PermanentError) as caught:
        http.raise_for(http.Response(status, {}, b"nope"), "thing")
    assert caught.value.status == status


def test_retry_after_reads_seconds_and_http_dates_and_clamps_the_past():
    now = 1_800_000_000.0
    assert http.retry_after("7", now=now) == 7.0
    assert http.retry_after("-3", now=now) == 0.0
    assert http.retry_after(formatdate(now + 120, usegmt=True), now=now) == pytest.approx(120, abs=1)
    assert http.retry_after(formatdate(now - 120, usegmt=True), now=now) == 0.0
    assert http.retry_after("soon", now=now) is None
    assert http.retry_after(None) is None


def test_raise_for_reason_masks_emails_and_truncates_the_receivers_error():
    body = json.dumps({"message": "Contact jane@acme.example already exists " + "x" * 500}).encode()
    with pytest.raises(PermanentError) as caught:
        http.raise_for(http.Response(400, {}, body), "hubspot upsert")
    assert "jane@acme.example" not in caught.value.reason and "j***@a***.example" in caught.value.reason
    assert len(caught.value.reason) < 260


def test_send_redirect_is_not_followed_and_is_permanent():
    class Redirecting(Receiver):
        def handle(self, request):
            return Reply(302, b"", {"Location": "/elsewhere"})

    with Redirecting() as receiver:
        answer = http.send("POST", receiver.url + "/hook", b"{}", {"Content-Type": "application/json"}, 2.0)
        assert answer.status == 302
        assert [r.path for r in receiver.requests] == ["/hook"]  # no silent GET to /elsewhere
        with pytest.raises(PermanentError):
            http.raise_for(answer, "webhook")


def test_send_connection_dropped_raises_retryable():
    with Receiver() as receiver:
        receiver.drop_next(1)
        with pytest.raises(RetryableError) as caught:
            http.send("POST", receiver.url + "/x", b"{}", {}, 2.0, what="webhook")
    assert caught.value.reason.startswith("webhook: connection failed")


def test_send_connection_refused_raises_retryable():
    with pytest.raises(RetryableError) as caught:
        http.send("POST", f"http://127.0.0.1:{closed_port()}/x", b"{}", {}, 1.0, what="webhook")
    assert caught.value.reason.startswith("webhook: connection failed")


# ---------------------------------------------------------------- Slack


def test_deliver_slack_alert_posts_block_kit_once_and_returns_receipt(slack):
    sink = SlackSink(slack.url + SLACK_PATH, timeout=2.0, reject_reasons=["no_budget"])

    receipt = sink.deliver(make_notice())

    assert receipt == {"posted": True}
    assert slack.violations == [] and len(slack.requests) == 1
    request = slack.accepted[0]
    assert request.path == SLACK_PATH and request.headers["content-type"].startswith("application/json")
    message = slack.messages()[0]
    assert message["text"] == "New SQL: Jane Doe (Acme), score 87"
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "section", "actions"]


@pytest.mark.parametrize("body, status", [("invalid_payload", 400), ("no_text", 400), ("invalid_token", 403),
                                          ("channel_not_found", 404), ("channel_is_archived", 410)])
def test_deliver_slack_refused_payload_or_token_raises_permanent(slack, body, status):
    slack.fail_next(1, status=status, body=body)

    with pytest.raises(PermanentError) as caught:
        SlackSink(slack.url + SLACK_PATH, timeout=2.0).deliver(make_notice())

    assert caught.value.status == status and body in caught.value.reason
    assert len(slack.requests) == 1


def test_deliver_slack_rate_limited_raises_retryable_with_retry_after(slack):
    slack.fail_next(1, status=429, retry_after=30, body="rate_limited")

    with pytest.raises(RetryableError) as caught:
        SlackSink(slack.url + SLACK_PATH, timeout=2.0).deliver(make_notice())

    assert caught.value.status == 429 and caught.value.retry_after == 30.0
    assert len(slack.requests) == 1  # the SDK's retry handlers must not try again behind the dispatcher


def test_deliver_slack_server_error_raises_retryable_after_one_attempt(slack):
    slack.fail_next(3, status=500)

    with pytest.raises(RetryableError) as caught:
        SlackSink(slack.url + SLACK_PATH, timeout=2.0).deliver(make_notice())

    assert caught.value.status == 500 and len(slack.requests) == 1


def test_deliver_slack_timeout_raises_retryable_quickly(slack):
    slack.timeout_next(1, seconds=HOLD)
    started = time.monotonic()

    with pytest.raises(RetryableError) as caught:
        SlackSink(slack.url + SLACK_PATH, timeout=FAST).deliver(make_notice())

    assert "timed out" in caught.value.reason and time.monotonic() - started < HOLD
    assert slack.accepted == []


def test_deliver_slack_connection_dropped_raises_retryable_after_one_attempt(slack):
    slack.drop_next(1)

    with pytest.raises(RetryableError):
        SlackSink(slack.url + SLACK_PATH, timeout=2.0).deliver(make_notice())

    assert len(slack.requests) == 1 and slack.accepted == []  # no hidden retry inside the SDK


def test_deliver_slack_unreachable_raises_retryable_without_leaking_the_url():
    url = f"http://127.0.0.1:{closed_port()}{SLACK_PATH}"

    with pytest.raises(RetryableError) as caught:
        SlackSink(url, timeout=1.0).deliver(make_notice())

    assert SLACK_PATH not in caught.value.reason


def test_post_decided_card_to_response_url_replaces_original(slack):
    message = decided_message(make_notice(), [], action="accept", actor="U0ACTOR1", reason=None, at=NOW)

    post(slack.url + "/actions/T000/1234/abcd", message, timeout=2.0)

    sent = slack.messages()[0]
    assert sent["replace_original"] is True and "actions" not in [b["type"] for b in sent["blocks"]]


def test_post_message_without_text_is_refused_by_slack_as_permanent(slack):
    with pytest.raises(PermanentError) as caught:
        post(slack.url + SLACK_PATH, {"blocks": [{"type": "divider"}]}, timeout=2.0)

    assert "no_text" in caught.value.reason and slack.violations[0].reason == "no text fallback"


# ---------------------------------------------------------------- email (SES v2 under moto)


@pytest.fixture
def ses():
    with mock_aws():
        client = boto3.client("sesv2", region_name="us-east-1")
        client.create_email_identity(EmailIdentity="leads@vendor.example")
        sent: list[dict[str, Any]] = []
        client.meta.events.register("provide-client-params.sesv2.SendEmail",
                                    lambda params, **_: sent.append(params))
        yield client, sent


def ses_messages() -> list[Any]:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages


def test_deliver_email_sends_one_escaped_message_to_the_owner(ses):
    client, sent = ses
    notice = make_notice(traits={"first_name": "Jane", "last_name": "Doe", "company": "Acme <script>",
                                 "job_title": "VP & Head"})

    receipt = EmailSink("leads@vendor.example", client=client, configuration_set="alerts").deliver(notice)

    assert receipt["message_id"]
    (message,) = ses_messages()
    assert message.destinations["ToAddresses"] == ["sam@vendor.example"]
    assert message.subject == "SQL: Jane Doe, Acme <script> (score 87)"
    assert "Acme &lt;script&gt;" in message.body and "<script>" not in message.body
    assert "VP &amp; Head" in message.body
    request = sent[0]
    assert request["ConfigurationSetName"] == "alerts"
    simple = request["Content"]["Simple"]
    charsets = {simple["Subject"]["Charset"], simple["Body"]["Text"]["Charset"], simple["Body"]["Html"]["Charset"]}
    assert charsets == {"UTF-8"}
    assert "+30 VP or C-level title" in simple["Body"]["Text"]["Data"]


def test_deliver_email_creates_its_ses_client_lazily_when_none_is_given(ses):
    sink = EmailSink("leads@vendor.example")

    sink.deliver(make_notice())

    assert len(ses_messages()) == 1


def test_deliver_email_without_owner_email_goes_to_the_fallback_recipient(ses):
    client, _ = ses

    EmailSink("leads@vendor.example", fallback_recipient="sales@vendor.example", client=client).deliver(
        make_notice(owner=Owner(id="rep-9", name="No Mail")))

    assert ses_messages()[0].destinations["ToAddresses"] == ["sales@vendor.example"]


def test_deliver_email_without_any_recipient_is_skipped_not_failed(ses):
    client, _ = ses

    receipt = EmailSink("leads@vendor.example", client=client).deliver(make_notice(owner=None))

    assert receipt == {"skipped": "no owner email and no fallback recipient"}
    assert ses_messages() == []


def test_deliver_email_from_unverified_sender_raises_permanent(ses):
    client, _ = ses

    with pytest.raises(PermanentError) as caught:
        EmailSink("nobody@elsewhere.example", client=client).deliver(make_notice())

    assert "MessageRejected" in caught.value.reason


@pytest.mark.parametrize("code, status, retryable", [
    ("TooManyRequestsException", 429, True), ("LimitExceededException", 400, True),
    ("SendingPausedException", 400, True), ("InternalFailure", 500, True),
    ("MessageRejected", 400, False), ("MailFromDomainNotVerifiedException", 400, False),
    ("AccountSuspendedException", 400, False), ("BadRequestException", 400, False),
])
def test_deliver_email_classifies_ses_error_codes(code, status, retryable):
    client = boto3.client("sesv2", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("send_email", service_error_code=code, http_status_code=status)
        with pytest.raises(RetryableError if retryable else PermanentError) as caught:
            EmailSink("leads@vendor.example", client=client).deliver(make_notice())
    assert code in caught.value.reason


def test_deliver_email_unreachable_endpoint_raises_retryable():
    client = boto3.client("sesv2", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{closed_port()}",
                          config=Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=1))

    with pytest.raises(RetryableError):
        EmailSink("leads@vendor.example", client=client).deliver(make_notice())


# ---------------------------------------------------------------- HubSpot


def test_deliver_hubspot_upserts_the_contact_by_email_in_one_call(hubspot):
    sink = HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=2.0)

    receipt = sink.deliver(make_notice())

    assert hubspot.violations == [] and len(hubspot.requests) == 1
    request = hubspot.accepted[0]
    assert request.headers["authorization"] == f"Bearer {HUBSPOT_TOKEN}"
    assert request.json() == {"inputs": [{"idProperty": "email", "id": "jane@acme.example", "properties": {
        "email": "jane@acme.example", "firstname": "Jane", "lastname": "Doe", "company": "Acme",
        "jobtitle": "VP Marketing", "country": "DE", "lifecyclestage": "salesqualifiedlead",
        "hubspot_owner_id": "501"}}]}
    contact = hubspot.contacts["jane@acme.example"]
    assert receipt == {"contact_id": contact["hs_object_id"], "created": True}
    assert contact["lifecyclestage"] == "salesqualifiedlead"


def test_deliver_hubspot_again_updates_the_same_contact(hubspot):
    sink = HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=2.0)

    first = sink.deliver(make_notice(from_stage="lead", to_stage="mql", move_id="tr_1"))
    second = sink.deliver(make_notice(move_id="tr_2"))

    assert first["contact_id"] == second["contact_id"] and second["created"] is False
    assert list(hubspot.contacts) == ["jane@acme.example"]
    assert hubspot.lifecycle_history["jane@acme.example"] == ["marketingqualifiedlead", "salesqualifiedlead"]


def test_deliver_hubspot_backward_move_clears_lifecyclestage_then_sets_it(hubspot):
    sink = HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=2.0)
    sink.deliver(make_notice())

    sink.deliver(make_notice(from_stage="sql", to_stage="lead", move_id="tr_reject"))

    bodies = [r.json()["inputs"][0]["properties"] for r in hubspot.accepted[1:]]
    assert [b.get("lifecyclestage") for b in bodies] == ["", "lead"]
    assert hubspot.contacts["jane@acme.example"]["lifecyclestage"] == "lead"
    assert hubspot.lifecycle_history["jane@acme.example"] == ["salesqualifiedlead", "", "lead"]


def test_hubspot_receiver_ignores_a_backward_move_without_the_clear(hubspot):
    """The control for the test above: without clearing first, HubSpot keeps the later stage."""
    sink = HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=2.0)
    sink.deliver(make_notice())

    sink.deliver(make_notice(from_stage="lead", to_stage="lead", move_id="tr_same_rank"))

    assert hubspot.contacts["jane@acme.example"]["lifecyclestage"] == "salesqualifiedlead"


def test_deliver_hubspot_without_email_is_skipped_without_a_request(hubspot):
    receipt = HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url).deliver(make_notice(email=None))

    assert receipt == {"skipped": "no email"} and hubspot.requests == []


def test_deliver_hubspot_with_a_wrong_token_raises_permanent(hubspot):
    with pytest.raises(PermanentError) as caught:
        HubSpotSink("pat-wrong", base_url=hubspot.url, timeout=2.0).deliver(make_notice())

    assert caught.value.status == 401 and "INVALID_AUTHENTICATION" in caught.value.reason
    assert hubspot.contacts == {}


def test_deliver_hubspot_unknown_lifecycle_value_raises_permanent_with_the_validation_error(hubspot):
    sink = HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=2.0, lifecycle_map={"sql": "hot_lead"})

    with pytest.raises(PermanentError) as caught:
        sink.deliver(make_notice())

    assert caught.value.status == 400 and "VALIDATION_ERROR" in caught.value.reason
    assert "hot_lead" in hubspot.violations[0].reason


def test_deliver_hubspot_rate_limited_raises_retryable_with_retry_after(hubspot):
    hubspot.fail_next(1, status=429, retry_after=10, body='{"status":"error","category":"RATE_LIMITS"}')

    with pytest.raises(RetryableError) as caught:
        HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=2.0).deliver(make_notice())

    assert caught.value.status == 429 and caught.value.retry_after == 10.0
    assert hubspot.contacts == {}


def test_deliver_hubspot_multi_status_with_an_input_error_raises_permanent():
    class MultiStatus(HubSpotReceiver):
        def handle(self, request):
            error = {"status": "error", "category": "VALIDATION_ERROR",
                     "message": "Property hubspot_owner_id: no owner 501"}
            return Reply.json(207, {"status": "COMPLETE", "results": [], "numErrors": 1, "errors": [error]})

    with MultiStatus(HUBSPOT_TOKEN) as receiver:
        with pytest.raises(PermanentError) as caught:
            HubSpotSink(HUBSPOT_TOKEN, base_url=receiver.url, timeout=2.0).deliver(make_notice())

    assert caught.value.status == 207 and "no owner 501" in caught.value.reason


def test_deliver_hubspot_server_error_raises_retryable(hubspot):
    hubspot.fail_next(1, status=502)

    with pytest.raises(RetryableError):
        HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=2.0).deliver(make_notice())


def test_deliver_hubspot_timeout_raises_retryable(hubspot):
    hubspot.timeout_next(1, seconds=HOLD)

    with pytest.raises(RetryableError) as caught:
        HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=FAST).deliver(make_notice())

    assert "timed out after 0.3s" in caught.value.reason


def test_deliver_hubspot_failed_clear_fails_the_attempt_before_setting_the_stage(hubspot):
    sink = HubSpotSink(HUBSPOT_TOKEN, base_url=hubspot.url, timeout=2.0)
    sink.deliver(make_notice())
    hubspot.fail_next(1, status=503)

    with pytest.raises(RetryableError):
        sink.deliver(make_notice(from_stage="sql", to_stage="lead", move_id="tr_reject"))

    assert len(hubspot.requests) == 2  # the set was not sent after the clear failed
    sink.deliver(make_notice(from_stage="sql", to_stage="lead", move_id="tr_reject"))
    assert hubspot.contacts["jane@acme.example"]["lifecyclestage"] == "lead"


# ---------------------------------------------------------------- Salesforce


def test_deliver_salesforce_creates_the_lead_by_external_id(salesforce):
    receipt = sf_sink(salesforce, timeout=2.0).deliver(make_notice())

    assert salesforce.violations == []
    token_call, upsert = salesforce.accepted
    assert token_call.form() == {"grant_type": "client_credentials", "client_id": "client-id",
                                 "client_secret": "client-secret"}
    assert upsert.method == "PATCH"
    assert upsert.path == "/services/data/v60.0/sobjects/Lead/Leadflow_Id__c/ld_0123456789abcdef01234567"
    assert upsert.headers["authorization"] == f"Bearer {salesforce.tokens[0]}"
    assert upsert.json() == {"LastName": "Doe", "FirstName": "Jane", "Email": "jane@acme.example",
                             "Company": "Acme", "Title": "VP Marketing", "Country": "DE",
                             "Status": "Working - Contacted", "OwnerId": "005000000000001AAA"}
    lead = salesforce.leads["ld_0123456789abcdef01234567"]
    assert receipt == {"salesforce_id": lead["Id"], "created": True}


def test_deliver_salesforce_again_updates_and_reuses_the_cached_token(salesforce):
    sink = sf_sink(salesforce, timeout=2.0)
    sink.deliver(make_notice())

    receipt = sink.deliver(make_notice(to_stage="opportunity", from_stage="sql", move_id="tr_2"))

    assert receipt == {"created": False}
    assert salesforce.token_requests == 1
    assert salesforce.leads["ld_0123456789abcdef01234567"]["Status"] == "Closed - Converted"


def test_deliver_salesforce_expired_token_is_refreshed_once_and_the_call_repeated(salesforce):
    sink = sf_sink(salesforce, timeout=2.0)
    sink.deliver(make_notice())
    salesforce.expire_token()

    sink.deliver(make_notice(to_stage="opportunity", from_stage="sql", move_id="tr_2"))

    assert salesforce.token_requests == 2
    patches = [r for r in salesforce.requests if r.method == "PATCH"]
    assert len(patches) == 3
    assert patches[1].headers["authorization"] == f"Bearer {salesforce.tokens[0]}"
    assert patches[2].headers["authorization"] == f"Bearer {salesforce.tokens[1]}"
    assert salesforce.leads["ld_0123456789abcdef01234567"]["Status"] == "Closed - Converted"


def test_deliver_salesforce_second_401_after_refresh_raises_permanent():
    class DeadTokens(SalesforceReceiver):
        def _token(self, request):
            reply = super()._token(request)
            self._valid_tokens.clear()  # every token is already invalid when used
            return reply

    with DeadTokens("client-id", "client-secret") as receiver:
        with pytest.raises(PermanentError) as caught:
            sf_sink(receiver, timeout=2.0).deliver(make_notice())

        assert caught.value.status == 401 and "INVALID_SESSION_ID" in caught.value.reason
        assert receiver.token_requests == 2  # one refresh, not a loop
        assert len([r for r in receiver.requests if r.method == "PATCH"]) == 2


def test_deliver_salesforce_uses_the_instance_url_the_token_endpoint_returns(salesforce):
    with SalesforceReceiver("client-id", "client-secret") as login:
        login.handle = lambda request: Reply.json(200, {"access_token": "tok", "instance_url": salesforce.url,
                                                        "token_type": "Bearer"})
        salesforce._valid_tokens.add("tok")

        sf_sink(login, timeout=2.0).deliver(make_notice())

        assert [r.path for r in login.requests] == ["/services/oauth2/token"]
    assert "ld_0123456789abcdef01234567" in salesforce.leads


def test_deliver_salesforce_lead_without_name_or_company_sends_the_required_placeholders(salesforce):
    sf_sink(salesforce, timeout=2.0).deliver(make_notice(traits={}, owner=None))

    lead = salesforce.leads["ld_0123456789abcdef01234567"]
    assert lead["LastName"] == "[not provided]" and lead["Company"] == "[not provided]"
    assert "OwnerId" not in lead and "FirstName" not in lead


def test_deliver_salesforce_disqualified_lead_is_closed_not_converted(salesforce):
    sf_sink(salesforce, timeout=2.0).deliver(
        make_notice(from_stage="mql", to_stage="lead", disqualified=True, disqualified_reason="student"))

    assert salesforce.leads["ld_0123456789abcdef01234567"]["Status"] == "Closed - Not Converted"


def test_deliver_salesforce_quotes_the_external_id_in_the_url(salesforce):
    sf_sink(salesforce, timeout=2.0).deliver(make_notice(lead_id="ld/odd id?"))

    assert "ld/odd id?" in salesforce.leads


def test_deliver_salesforce_wrong_client_secret_raises_permanent_with_the_oauth_error(salesforce):
    with pytest.raises(PermanentError) as caught:
        SalesforceSink(salesforce.url, "client-id", "wrong", timeout=2.0).deliver(make_notice())

    assert caught.value.status == 400 and "invalid_client" in caught.value.reason
    assert salesforce.leads == {}


def test_deliver_salesforce_refused_field_value_raises_permanent_with_the_error_code(salesforce):
    sink = sf_sink(salesforce, timeout=2.0, status_map={"sql": "Hot"})

    with pytest.raises(PermanentError) as caught:
        sink.deliver(make_notice())

    assert caught.value.status == 400 and "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in caught.value.reason


def test_deliver_salesforce_unknown_external_id_field_raises_permanent(salesforce):
    with pytest.raises(PermanentError) as caught:
        sf_sink(salesforce, timeout=2.0, external_id_field="Nope__c").deliver(make_notice())

    assert caught.value.status == 404 and "NOT_FOUND" in caught.value.reason


def test_deliver_salesforce_several_matching_leads_raises_permanent(salesforce):
    sink = sf_sink(salesforce, timeout=2.0)
    sink.deliver(make_notice())
    salesforce.fail_next(1, status=300, body='["/services/data/v60.0/sobjects/Lead/00Q1", "/x/00Q2"]')

    with pytest.raises(PermanentError) as caught:
        sink.deliver(make_notice(move_id="tr_2"))

    assert caught.value.status == 300


def test_deliver_salesforce_api_limit_reached_raises_retryable(salesforce):
    sink = sf_sink(salesforce, timeout=2.0)
    sink.deliver(make_notice())
    salesforce.fail_next(1, status=403, body='[{"message": "TotalRequests Limit exceeded.", '
                                             '"errorCode": "REQUEST_LIMIT_EXCEEDED"}]')

    with pytest.raises(RetryableError) as caught:
        sink.deliver(make_notice(move_id="tr_2"))

    assert caught.value.status == 403 and "REQUEST_LIMIT_EXCEEDED" in caught.value.reason


def test_deliver_salesforce_server_error_raises_retryable(salesforce):
    sink = sf_sink(salesforce, timeout=2.0)
    sink.deliver(make_notice())
    salesforce.fail_next(1, status=503, retry_after=5)

    with pytest.raises(RetryableError) as caught:
        sink.deliver(make_notice(move_id="tr_2"))

    assert caught.value.retry_after == 5.0


def test_deliver_salesforce_timeout_raises_retryable(salesforce):
    salesforce.timeout_next(1, seconds=HOLD)

    with pytest.raises(RetryableError) as caught:
        sf_sink(salesforce, timeout=FAST).deliver(make_notice())

    assert "timed out" in caught.value.reason and salesforce.leads == {}


# ---------------------------------------------------------------- generic webhook


def test_deliver_webhook_posts_the_contract_body_signed_as_standard_webhooks(webhook):
    receipt = WebhookSink(webhook.url + "/crm", SECRET, timeout=2.0).deliver(make_notice())

    assert receipt == {"status": 204} and webhook.violations == []
    (delivery,) = webhook.deliveries
    assert delivery.id == "tr_0001"
    assert delivery.payload == {
        "lead_id": "ld_0123456789abcdef01234567", "email": "jane@acme.example", "from_stage": "mql",
        "to_stage": "sql", "score": 87.0, "occurred_at": "2026-11-20T10:00:00.000Z", "transition_id": "tr_0001",
        "lead": make_notice().lead}
    request = webhook.accepted[0]
    assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 5
    assert request.headers["webhook-signature"].startswith("v1,")
    assert request.headers["user-agent"] == "leadflow"
    assert request.body == json.dumps(payload(make_notice()), separators=(",", ":")).encode()
    Webhook(SECRET).verify(request.body, request.headers)  # independently verifiable


def test_deliver_webhook_retry_keeps_the_id_and_signs_again(webhook):
    clock = iter([time.time() - 60, time.time()])
    sink = WebhookSink(webhook.url, SECRET, timeout=2.0, clock=lambda: next(clock))
    webhook.fail_next(1, status=500)

    with pytest.raises(RetryableError):
        sink.deliver(make_notice())
    sink.deliver(make_notice())

    first, second = webhook.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == "tr_0001"
    assert first.headers["webhook-timestamp"] != second.headers["webhook-timestamp"]
    assert webhook.ids() == ["tr_0001"]


def test_deliver_webhook_with_the_wrong_secret_is_refused_as_permanent(webhook):
    with pytest.raises(PermanentError) as caught:
        WebhookSink(webhook.url, "whsec_" + "A" * 32, timeout=2.0).deliver(make_notice())

    assert caught.value.status == 401 and webhook.deliveries == []
    assert webhook.violations[0].reason.startswith("signature")


def test_deliver_webhook_with_a_stale_clock_is_refused_by_the_receiver(webhook):
    with pytest.raises(PermanentError):
        WebhookSink(webhook.url, SECRET, timeout=2.0, clock=lambda: time.time() - 3600).deliver(make_notice())

    assert "too old" in webhook.violations[0].reason


def test_deliver_webhook_with_an_unusable_secret_raises_permanent_without_a_request(webhook):
    with pytest.raises(PermanentError):
        WebhookSink(webhook.url, "", timeout=2.0).deliver(make_notice())

    assert webhook.requests == []


def test_deliver_webhook_rate_limited_with_http_date_raises_retryable_with_retry_after(webhook):
    webhook.fail_next(1, status=429, retry_after=formatdate(time.time() + 90, usegmt=True))

    with pytest.raises(RetryableError) as caught:
        WebhookSink(webhook.url, SECRET, timeout=2.0).deliver(make_notice())

    assert 85 <= caught.value.retry_after <= 91


@pytest.mark.parametrize("status", [409, 500, 503])
def test_deliver_webhook_transient_status_raises_retryable(webhook, status):
    webhook.fail_next(1, status=status)

    with pytest.raises(RetryableError) as caught:
        WebhookSink(webhook.url, SECRET, timeout=2.0).deliver(make_notice())

    assert caught.value.status == status


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_deliver_webhook_client_error_raises_permanent(webhook, status):
    webhook.fail_next(1, status=status, body="no such endpoint")

    with pytest.raises(PermanentError) as caught:
        WebhookSink(webhook.url, SECRET, timeout=2.0).deliver(make_notice())

    assert caught.value.status == status and "no such endpoint" in caught.value.reason


def test_deliver_webhook_timeout_raises_retryable_and_the_late_delivery_is_deduplicable(webhook):
    webhook.timeout_next(1, seconds=HOLD, then_process=True)
    sink = WebhookSink(webhook.url, SECRET, timeout=FAST)

    with pytest.raises(RetryableError):
        sink.deliver(make_notice())
    sink.deliver(make_notice())

    webhook.wait_for(2, timeout=3)
    assert webhook.ids() == ["tr_0001", "tr_0001"]  # same webhook-id: the receiver can drop the second


def test_deliver_webhook_while_receiver_down_raises_retryable_and_succeeds_once_up(webhook):
    sink = WebhookSink(webhook.url, SECRET, timeout=2.0)
    webhook.down()

    with pytest.raises(RetryableError) as caught:
        sink.deliver(make_notice())
    webhook.up()
    sink.deliver(make_notice())

    assert caught.value.status == 503
    assert len(webhook.failed) == 1 and len(webhook.accepted) == 1


# ---------------------------------------------------------------- EventBridge (moto)


def test_deliver_eventbridge_puts_a_lead_stage_changed_event_rules_can_route():
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        events.create_event_bus(Name="leadflow")
        queue_url = sqs.create_queue(QueueName="stage-changes")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="sql-moves", EventBusName="leadflow",
                        EventPattern=json.dumps({"source": ["leadflow"], "detail-type": ["LeadStageChanged"],
                                                 "detail": {"to_stage": ["sql"]}}))
        events.put_targets(Rule="sql-moves", EventBusName="leadflow", Targets=[{"Id": "q", "Arn": queue_arn}])

        receipt = EventBridgeSink("leadflow", client=events).deliver(make_notice())

        received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    assert receipt["event_id"]
    (message,) = received
    event = json.loads(message["Body"])
    assert event["source"] == "leadflow" and event["detail-type"] == "LeadStageChanged"
    assert event["detail"] == payload(make_notice())
    assert event["time"].startswith("2026-11-20T10:00:00")


def test_deliver_eventbridge_move_outside_the_rule_is_not_routed():
    with mock_aws():
        events = boto3.client("events", region_name="us-east-1")
        sqs = boto3.client("sqs", region_name="us-east-1")
        queue_url = sqs.create_queue(QueueName="sql-only")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.put_rule(Name="sql-moves", EventPattern=json.dumps({"source": ["leadflow"],
                                                                   "detail": {"to_stage": ["sql"]}}))
        events.put_targets(Rule="sql-moves", Targets=[{"Id": "q", "Arn": queue_arn}])

        EventBridgeSink("default", client=events).deliver(make_notice(from_stage="lead", to_stage="mql"))

        assert "Messages" not in sqs.receive_message(QueueUrl=queue_url)


@pytest.mark.parametrize("code, retryable", [("ThrottlingException", True), ("InternalFailure", True),
                                             ("InternalException", True), ("AccessDeniedException", False),
                                             ("MalformedDetail", False)])
def test_deliver_eventbridge_failed_entry_is_classified_by_its_error_code(code, retryable):
    client = boto3.client("events", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_response("put_events", {"FailedEntryCount": 1,
                                         "Entries": [{"ErrorCode": code, "ErrorMessage": "entry failed"}]})
        with pytest.raises(RetryableError if retryable else PermanentError) as caught:
            EventBridgeSink("leadflow", client=client).deliver(make_notice())
    assert code in caught.value.reason


@pytest.mark.parametrize("code, status, retryable", [("ThrottlingException", 400, True),
                                                     ("InternalException", 500, True),
                                                     ("ResourceNotFoundException", 400, False)])
def test_deliver_eventbridge_call_error_is_classified(code, status, retryable):
    client = boto3.client("events", region_name="us-east-1")
    with Stubber(client) as stub:
        stub.add_client_error("put_events", service_error_code=code, http_status_code=status)
        with pytest.raises(RetryableError if retryable else PermanentError):
            EventBridgeSink("leadflow", client=client).deliver(make_notice())
