"""rotation/azure_errors.py: which SDK failures are retried, and which writes must be waited out."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ServiceRequestError, ServiceResponseError

from rotation.azure_errors import translated
from rotation.errors import TransientError, unanswered_of


def raised_by(error: Exception, *, write: bool) -> TransientError:
    with pytest.raises(TransientError) as caught, translated("secret 'db'", write=write):
        raise error
    return caught.value


def test_a_write_without_an_answer_is_marked_unanswered_and_a_read_is_not() -> None:
    write = raised_by(ServiceResponseError("read timed out"), write=True)
    assert write.unanswered
    assert unanswered_of(str(write))
    assert "did not answer" in str(write)
    read = raised_by(ServiceResponseError("read timed out"), write=False)
    assert not read.unanswered
    assert not unanswered_of(str(read))


def test_a_request_never_sent_is_not_unanswered_even_for_a_write() -> None:
    error = raised_by(ServiceRequestError("connection refused"), write=True)
    assert not error.unanswered
    assert "could not be reached" in str(error)
