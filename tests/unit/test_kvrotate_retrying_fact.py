"""What ``kvrotate status`` says about a step waiting to retry (kvrotate/views.py ``facts``)."""

from __future__ import annotations

from kvrotate.views import facts


def view(retrying: dict[str, object]) -> dict[str, object]:
    return {
        "id": "rotate_kv_s_v",
        "runtimeStatus": "Running",
        "status": {"step": "promote", "stepStartedAt": "2026-12-03T08:00:00+00:00", "retrying": retrying},
        "output": None,
    }


def test_an_outlasting_step_shows_when_it_tries_next_and_until_when() -> None:
    shown = dict(
        facts(
            view(
                {
                    "step": "promote",
                    "attempt": 7,
                    "nextAttemptAt": "2026-12-03T08:31:05+00:00",
                    "retryUntil": "2026-12-04T08:00:00+00:00",
                    "after": {
                        "step": "promote",
                        "class": "TransientError",
                        "message": "spoke-kv answered 503",
                    },
                }
            )
        )
    )
    assert shown["retrying"] == (
        "attempt 7 after TransientError: spoke-kv answered 503, "
        "next at 2026-12-03 08:31:05Z, gives up after 2026-12-04 08:00:00Z"
    )


def test_a_status_without_the_schedule_reads_as_before() -> None:
    shown = dict(facts(view({"attempt": 2, "after": {"class": "TransientError", "message": "429"}})))
    assert shown["retrying"] == "attempt 2 after TransientError: 429"
