"""The Cloud DLP engines (``dlp``, ``hybrid``) as plain functions: packing, mapping, retries,
hybrid routing, options. Through the core composite: ``tests/transforms/test_pii_dlp.py``; in
the pipeline commands: ``tests/e2e/test_pii_dlp.py``.

Cloud DLP has no emulator. These tests run the real ``google-cloud-dlp`` client against
``tests.support.dlp_fake.FakeDlp``, a FAKE of that external API at the client boundary: an
in-process gRPC server answering ``DeidentifyContent`` the way DLP documents it (each finding
replaced by ``[INFO_TYPE]``, per-info-type counts in the transformation overview), enforcing
DLP's per-request limits with INVALID_ARGUMENT and failing with RESOURCE_EXHAUSTED or
UNAVAILABLE on demand. They prove what this code does with DLP's answers, not what DLP finds.
"""

import pickle
import random

import grpc
import pytest
from google.cloud import dlp_v2

from tests.support.dlp_fake import (
    DEIDENTIFY_TEMPLATE,
    INSPECT_TEMPLATE,
    PROJECT,
    FakeDlp,
    FakeLimits,
)
from transforms.pii.dlp import DlpEngine, HybridEngine
from transforms.pii.dlp_batching import PackLimits, pack, placeholder_counts, request_bytes
from transforms.pii.dlp_client import DlpServiceError
from transforms.pii.engine import Redaction, RedactionError
from transforms.pii.ratelimit import RateLimiter, backoff_delay, shared_limiter
from transforms.pii.settings import DlpOptions

EMAIL_TEXT = "Please mail alice.smith@example.com about the invoice."
EMAIL_TEXT_REDACTED = "Please mail [EMAIL_ADDRESS] about the invoice."


@pytest.fixture
def fake():
    with FakeDlp() as server:
        yield server


def make_engine(fake, engine_class=DlpEngine, **options):
    options.setdefault("limiter", RateLimiter(6_000_000))
    options.setdefault("sleep", lambda s: None)
    return engine_class(
        project=PROJECT,
        inspect_template=INSPECT_TEMPLATE,
        deidentify_template=DEIDENTIFY_TEMPLATE,
        endpoint=fake.endpoint,
        **options,
    )


def assert_no_text_in(errors, texts):
    for error in errors:
        for text in texts:
            assert text not in str(error)


# ------------------------------------------------------------------------ request sizes


@pytest.mark.parametrize(
    "texts",
    [
        [],
        ["a"],
        ["x" * 127, "y" * 128, "z" * 16_383, "w" * 16_384],
        ["Grüße aus Köln, 電話 03-1234-5678 " * 40, ""],
        ["q" * 70_000, "r" * 200_000],
    ],
)
def test_packer_request_size_is_the_serialised_size(texts):
    engine = DlpEngine(
        project=PROJECT, inspect_template=INSPECT_TEMPLATE, deidentify_template=DEIDENTIFY_TEMPLATE
    )
    request = engine.request(texts)
    assert engine.request_bytes(texts) == dlp_v2.DeidentifyContentRequest.pb(request).ByteSize()


def test_fake_measures_the_same_request_size(fake):
    engine = make_engine(fake)
    texts = ["Dr. Okafor called", "x" * 300, EMAIL_TEXT]
    engine.redact(texts)
    [received] = fake.requests
    assert received.request_bytes == engine.request_bytes(list(received.texts))


# ----------------------------------------------------------------------------- packing


@pytest.mark.parametrize(
    ("limits", "sizes", "expected"),
    [
        # bytes bind: fixed 100 + table framing; each cell 203 bytes
        (PackLimits(1_000, 50, 100), [(203, 1)] * 9, [[0, 1, 2, 3], [4, 5, 6, 7], [8]]),
        # cells bind
        (PackLimits(100_000, 3, 100), [(10, 1)] * 7, [[0, 1, 2], [3, 4, 5], [6]]),
        # findings bind
        (PackLimits(100_000, 50, 10), [(10, 4)] * 5, [[0, 1], [2, 3], [4]]),
    ],
)
def test_pack_respects_each_limit(limits, sizes, expected):
    requests, oversize = pack(sizes, limits, fixed_bytes=100, header_bytes=8)
    assert requests == expected and oversize == []
    for request in requests:
        rows = sum(sizes[i][0] for i in request)
        assert request_bytes(100, 8, rows) <= limits.max_request_bytes
        assert len(request) <= limits.max_cells
        assert sum(sizes[i][1] for i in request) <= limits.max_findings


def test_pack_sets_aside_items_over_a_limit_on_their_own():
    sizes = [(10, 1), (5_000, 1), (10, 99), (10, 1)]
    requests, oversize = pack(sizes, PackLimits(1_000, 50, 20), fixed_bytes=100, header_bytes=8)
    assert requests == [[0, 3]]
    assert oversize == [1, 2]


def test_engine_never_sends_a_request_over_any_limit(fake):
    limits = FakeLimits(max_request_bytes=4_000, max_cells=7, max_findings=40)
    fake.limits = limits
    engine = make_engine(fake, limits=PackLimits(*limits))
    tiny = [f"Mr. Tan{chr(97 + i)} ok" for i in range(20)]
    long = [f"Ms. Long{chr(97 + i)} " + "lorem ipsum " * 120 for i in range(6)]
    dense = [
        " ".join(f"user{j}@example.com Dr. Okafor{chr(97 + j)}" for j in range(5)) + f" #{i}"
        for i in range(8)
    ]
    texts = tiny + long + dense
    outcomes = engine.redact_partial(texts)
    assert all(isinstance(o, Redaction) for o in outcomes)
    assert [r.status for r in fake.requests] == ["OK"] * len(fake.requests)
    assert all(r.request_bytes <= limits.max_request_bytes for r in fake.requests)
    assert all(len(r.texts) <= limits.max_cells for r in fake.requests)
    assert all(r.findings <= limits.max_findings for r in fake.requests)
    assert max(len(r.texts) for r in fake.requests) == limits.max_cells  # cells bound
    assert max(r.request_bytes for r in fake.requests) > 3_000  # bytes bound
    # findings bound: the estimate (1 + pre-screen findings + bytes // 200; a dense text's is
    # 6) of some request is within one dense text of the limit
    estimates = [
        sum(1 + sum(placeholder_counts(t).values()) + len(t.encode()) // 200 for t in r.texts)
        for r in fake.requests
    ]
    assert max(estimates) <= limits.max_findings
    assert max(estimates) > limits.max_findings - 6
    assert sorted(t for r in fake.requests for t in r.texts) == sorted(
        engine._screen.redact_text(t).text for t in texts
    )


def test_request_rejected_as_over_a_limit_is_split(fake):
    fake.limits = FakeLimits(max_findings=5)
    engine = make_engine(fake)
    texts = [f"Dr. Aa{c} met Mr. Bb{c}." for c in "abcd"]  # 2 names each: 8 findings > 5
    outcomes = engine.redact_partial(texts)
    assert outcomes == [Redaction("[PERSON_NAME] met [PERSON_NAME].", {"PERSON_NAME": 2})] * 4
    assert [(len(r.texts), r.status) for r in fake.requests] == [
        (4, "INVALID_ARGUMENT"),
        (2, "OK"),
        (2, "OK"),
    ]
    assert engine.stats.splits == 1


def test_a_text_over_a_limit_alone_fails_closed(fake):
    fake.limits = FakeLimits(max_findings=5)
    engine = make_engine(fake, limits=PackLimits(max_request_bytes=2_000))
    crowded = " ".join(f"Dr. Name{chr(97 + i)}" for i in range(6))
    huge = "z" * 3_000
    outcomes = engine.redact_partial(["fine, Mr. Brown", crowded, huge])
    assert outcomes[0] == Redaction("fine, [PERSON_NAME]", {"PERSON_NAME": 1})
    assert [o.reason for o in outcomes[1:]] == ["redaction_failed:dlp_too_large"] * 2
    assert_no_text_in(outcomes[1:], [crowded, huge, "Dr. Name"])
    assert huge not in fake.texts_received and all(
        len(t) < 3_000 for r in fake.requests for t in r.texts
    )


# ----------------------------------------------------------------------------- mapping


def test_results_map_back_in_order_with_union_of_counts(fake):
    engine = make_engine(fake)
    texts = ["", EMAIL_TEXT + " Dr. Okafor", "nothing to see", "Ms. Lee, SSN 123-45-6789"]
    assert engine.redact_partial(texts) == [
        Redaction("", {}),
        Redaction(EMAIL_TEXT_REDACTED + " [PERSON_NAME]", {"EMAIL_ADDRESS": 1, "PERSON_NAME": 1}),
        Redaction("nothing to see", {}),
        Redaction(
            "[PERSON_NAME], SSN [US_SOCIAL_SECURITY_NUMBER]",
            {"US_SOCIAL_SECURITY_NUMBER": 1, "PERSON_NAME": 1},
        ),
    ]
    # DLP received the offline engine's output: no value the pre-screen had found
    [received] = fake.requests
    assert received.texts == (
        EMAIL_TEXT_REDACTED + " Dr. Okafor",
        "nothing to see",
        "Ms. Lee, SSN [US_SOCIAL_SECURITY_NUMBER]",
    )
    assert received.parent == f"projects/{PROJECT}/locations/global"
    assert (received.inspect_template, received.deidentify_template) == (
        INSPECT_TEMPLATE,
        DEIDENTIFY_TEMPLATE,
    )


def test_placeholders_already_in_the_input_are_not_counted(fake):
    engine = make_engine(fake)
    [result] = engine.redact(["the form says [PERSON_NAME] and [EMAIL_ADDRESS]; Dr. Okafor"])
    assert result == Redaction(
        "the form says [PERSON_NAME] and [EMAIL_ADDRESS]; [PERSON_NAME]", {"PERSON_NAME": 1}
    )


@pytest.mark.parametrize(
    ("corruption", "reason"),
    [
        ("mask", "redaction_failed:dlp_unmapped_output"),
        ("transformation_error", "redaction_failed:dlp_transformation_error"),
    ],
)
def test_output_that_cannot_be_mapped_fails_closed(fake, corruption, reason):
    fake.corrupt = corruption
    engine = make_engine(fake)
    texts = ["Dr. Okafor wrote", "plain"]
    outcomes = engine.redact_partial(texts)
    assert [o.reason for o in outcomes] == [reason, reason]
    assert_no_text_in(outcomes, [*texts, "Okafor"])
    with pytest.raises(RedactionError):
        engine.redact(texts)


# ---------------------------------------------------------------------- quota, failures


def test_backoff_doubles_from_1_to_32_s_with_bounded_jitter():
    no_jitter = [backoff_delay(n, rng=random.Random(0), jitter=0) for n in range(1, 9)]
    assert no_jitter == [1, 2, 4, 8, 16, 32, 32, 32]
    rng = random.Random(7)
    for n, nominal in zip(range(1, 9), no_jitter, strict=True):
        delay = backoff_delay(n, rng=rng)
        assert nominal <= delay <= 1.25 * nominal
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_retry_then_success(fake):
    sleeps = []
    engine = make_engine(fake, sleep=sleeps.append)
    fake.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
    assert engine.redact(["Dr. Okafor"]) == [Redaction("[PERSON_NAME]", {"PERSON_NAME": 1})]
    assert [r.status for r in fake.requests] == ["RESOURCE_EXHAUSTED", "UNAVAILABLE", "OK"]
    assert len(sleeps) == 2 and 1 <= sleeps[0] <= 1.25 and 2 <= sleeps[1] <= 2.5
    assert (engine.stats.requests, engine.stats.retries) == (3, 2)


def test_retries_exhausted_fail_only_that_request_texts(fake):
    sleeps = []
    engine = make_engine(fake, sleep=sleeps.append, max_attempts=4, limits=PackLimits(max_cells=1))
    fake.fail_matching("Dr. Stuck", grpc.StatusCode.UNAVAILABLE)
    texts = ["Dr. Stuck is here", "Mr. Fine is here"]
    outcomes = engine.redact_partial(texts)
    assert outcomes[0].reason == "redaction_failed:dlp_unavailable"
    assert outcomes[1] == Redaction("[PERSON_NAME] is here", {"PERSON_NAME": 1})
    assert [r.status for r in fake.requests].count("UNAVAILABLE") == 4
    assert len(sleeps) == 3
    assert all(n <= s <= 1.25 * n for s, n in zip(sleeps, [1, 2, 4], strict=True))
    assert_no_text_in(outcomes[:1], [*texts, "Stuck"])


@pytest.mark.parametrize("code", [grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND])
def test_errors_retries_cannot_fix_fail_the_bundle_instead(fake, code):
    engine = make_engine(fake)
    fake.fail_next(code)
    with pytest.raises(DlpServiceError) as caught:
        engine.redact_partial(["Dr. Secretname"])
    assert "Secretname" not in str(caught.value) and caught.value.__cause__ is None
    assert len(fake.requests) == 1  # not retried here: the runner retries the bundle


def test_invalid_argument_that_is_not_a_limit_is_not_split(fake):
    engine = make_engine(fake)
    fake.fail_next(grpc.StatusCode.INVALID_ARGUMENT)
    with pytest.raises(DlpServiceError):
        engine.redact_partial(["Dr. One", "Dr. Two"])
    assert len(fake.requests) == 1


def test_rate_limiter_spaces_calls_with_an_injected_clock():
    now = [100.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(60, clock=lambda: now[0], sleep=sleep)
    starts = []
    for _ in range(4):
        limiter.acquire()
        starts.append(now[0])
    assert starts == [100.0, 101.0, 102.0, 103.0]
    now[0] = 200.0  # idle: no burst is saved up
    limiter.acquire()
    limiter.acquire()
    assert now[0] == 201.0 and waits == [1.0, 1.0, 1.0, 1.0]
    assert shared_limiter("dlp-test", 120) is shared_limiter("dlp-test", 120)
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_engine_waits_for_the_limiter_before_every_attempt(fake):
    now = [0.0]
    limiter = RateLimiter(30, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    engine = make_engine(fake, limiter=limiter, limits=PackLimits(max_cells=1))
    fake.fail_next(grpc.StatusCode.RESOURCE_EXHAUSTED)
    engine.redact(["Dr. A", "Dr. B", "Dr. C"])
    assert len(fake.requests) == 4  # three requests, one retried
    assert now[0] == 6.0  # four attempts two seconds apart, the first at once


# ------------------------------------------------------------------------------ hybrid


def test_hybrid_sends_every_text_and_clean_ones_for_names_and_addresses_only(fake):
    engine = make_engine(fake, HybridEngine)
    texts = [
        "Summarise the quarterly report.",
        EMAIL_TEXT + " Cc Dr. Okafor.",
        "Dr. Okafor lives at 12 Baker Street.",  # clean for the offline engine
        "Mr. Brown asked again.",  # escalated by the caller: the full inspection
        "",
    ]
    outcomes = engine.redact_partial(texts, escalate=[False, False, False, True, True])
    full = [r for r in fake.requests if r.inspect_template]
    names = [r for r in fake.requests if not r.inspect_template]
    assert [t for r in full for t in r.texts] == [EMAIL_TEXT_REDACTED + " Cc Dr. Okafor.", texts[3]]
    assert [t for r in names for t in r.texts] == [
        texts[0],
        texts[2],
    ]
    assert {r.inline_info_types for r in names} == {("PERSON_NAME", "STREET_ADDRESS")}
    assert outcomes == [
        Redaction(texts[0], {}),
        Redaction(
            EMAIL_TEXT_REDACTED + " Cc [PERSON_NAME].", {"EMAIL_ADDRESS": 1, "PERSON_NAME": 1}
        ),
        Redaction(
            "[PERSON_NAME] lives at [STREET_ADDRESS].", {"PERSON_NAME": 1, "STREET_ADDRESS": 1}
        ),
        Redaction("[PERSON_NAME] asked again.", {"PERSON_NAME": 1}),
        Redaction("", {}),
    ]
    assert engine.stats.texts == 5 and engine.stats.texts_sent == 4
    assert engine.stats.names_texts_sent == 2
    assert engine.stats.bytes == sum(len(t) for t in texts)


def test_hybrid_names_requests_are_sized_exactly(fake):
    engine = make_engine(fake, HybridEngine)
    texts = ["plain", "also plain, Mrs. Adler"]
    engine.redact(texts)
    (received,) = fake.requests
    assert received.inline_info_types == ("PERSON_NAME", "STREET_ADDRESS")
    assert received.request_bytes == engine.request_bytes(texts, names_only=True)


def test_hybrid_with_only_empty_texts_makes_no_request(fake):
    engine = make_engine(fake, HybridEngine)
    assert engine.redact(["", ""]) == [Redaction("", {}), Redaction("", {})]
    assert fake.requests == []


# ----------------------------------------------------------------- options and pickling


def test_engines_pickle_as_options_and_connect_on_first_use(fake):
    engine = make_engine(fake, HybridEngine, requests_per_minute=6_000_000)
    assert engine.caller._client is None
    copy = pickle.loads(pickle.dumps(engine))
    assert isinstance(copy, HybridEngine) and copy.caller._client is None
    assert copy.redact([EMAIL_TEXT]) == [Redaction(EMAIL_TEXT_REDACTED, {"EMAIL_ADDRESS": 1})]


def test_dlp_options_name_every_problem():
    problems = DlpOptions(location="EU!", endpoint="https://x", requests_per_minute=0).problems()
    assert problems == [
        "--dlp_project is required (the project billed for DLP)",
        "--dlp_location must be 'global' or a region such as europe-west3",
        "--dlp_inspect_template must be a resource name such as "
        "projects/<project>/locations/<location>/inspectTemplates/<id>",
        "--dlp_deidentify_template must be a resource name such as "
        "projects/<project>/locations/<location>/deidentifyTemplates/<id>",
        "--dlp_endpoint must be host[:port] without a scheme",
        "--dlp_requests_per_minute must be > 0",
    ]
    regional = DlpOptions(
        project="p",
        location="europe-west3",
        inspect_template="projects/p/locations/europe-west3/inspectTemplates/i",
        deidentify_template="projects/p/deidentifyTemplates/d",  # global: wrong place
        endpoint="dlp.europe-west3.rep.googleapis.com",
    )
    assert regional.problems() == [
        "--dlp_deidentify_template must be in --dlp_location 'europe-west3'"
    ]
    with pytest.raises(ValueError, match="--dlp_project is required"):
        DlpEngine(inspect_template=INSPECT_TEMPLATE, deidentify_template=DEIDENTIFY_TEMPLATE)
