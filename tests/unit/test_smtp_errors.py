"""_expect: an SMTP reply outside the expected codes becomes SmtpReplyError with its code."""

import pytest

from rideshare.mail.service import SmtpReplyError, _expect


@pytest.mark.parametrize(("reply", "ok"), [((250, b"2.0.0 Ok"), (250,)), ((251, b"forwarded"), (250, 251))])
def test_expected_replies_are_returned_as_text(reply, ok):
    assert _expect(reply, ok) == f"{reply[0]} {reply[1].decode()}"


@pytest.mark.parametrize(
    ("code", "text"),
    [(421, b"4.3.2 Service shutting down"), (450, b"mailbox busy"), (550, b"5.1.1 No such user"), (554, b"rejected")],
)
def test_unexpected_replies_raise_with_the_code(code, text):
    with pytest.raises(SmtpReplyError) as caught:
        _expect((code, text), (250,))
    assert caught.value.code == code
    assert str(caught.value) == f"{code} {text.decode()}"


def test_251_is_an_error_where_only_250_is_expected():
    with pytest.raises(SmtpReplyError) as caught:
        _expect((251, b"forwarded"), (250,))
    assert caught.value.code == 251


def test_undecodable_reply_text_is_replaced_not_raised():
    with pytest.raises(SmtpReplyError) as caught:
        _expect((550, b"bad \xff byte"), (250,))
    assert str(caught.value) == "550 bad \ufffd byte"


def test_str_reply_text_is_accepted():
    assert _expect((250, "Ok"), (250,)) == "250 Ok"
