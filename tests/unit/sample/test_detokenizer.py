"""The incremental detokenizer with the default model's tokenizer (byte-level BPE)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagoda.engine.detokenizer import IncrementalDetokenizer

SPECIAL = [0, 1, 2]  # <|endoftext|>, <|im_start|>, <|im_end|>
PIECES = [
    "Hello",
    " world",
    "世界",
    "🎉",
    "🧑‍🚀",
    " naïve",
    "—",
    "\n",
    "日本語のテキスト",
    " ok.",
    "Ω≈ç√",
    "👍🏽",
]


def stream(tokenizer, prompt, ids, skip=True, stop=(), include=False):
    detok = IncrementalDetokenizer(tokenizer, prompt, skip, list(stop), include)
    deltas = [detok.append(t) for t in ids]
    return detok, deltas


@pytest.fixture(scope="module")
def tok(smollm2_tokenizer):
    return smollm2_tokenizer


@pytest.fixture(scope="module")
def token_pool(tok):
    """Token ids from multi-byte text (many are single bytes of a character), specials, plain words."""
    pool = {t for piece in PIECES for t in tok.encode(piece)}
    return sorted(pool | set(SPECIAL) | set(range(3, 300)))


@settings(max_examples=150, deadline=None)
@given(data=st.data(), skip=st.booleans())
def test_deltas_add_up_to_decoding_the_whole_output(tok, token_pool, data, skip):
    prompt = data.draw(st.lists(st.sampled_from(token_pool), max_size=8))
    ids = data.draw(st.lists(st.sampled_from(token_pool), max_size=30))
    detok, deltas = stream(tok, prompt, ids, skip)
    streamed = "".join(deltas)
    final = detok.finish()
    assert streamed + final == tok.decode(ids, skip_special_tokens=skip)
    assert detok.text == streamed + final and detok.stop_reason is None


@settings(max_examples=100, deadline=None)
@given(pieces=st.lists(st.sampled_from(PIECES), min_size=1, max_size=8))
def test_valid_text_streams_without_half_characters(tok, pieces):
    text = "".join(pieces)
    ids = tok.encode(text)
    detok, deltas = stream(tok, tok.encode("<|im_start|>assistant\n"), ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text and detok.finish() == ""


def test_special_tokens_skipped_or_kept(tok):
    ids = tok.encode("Hi<|im_end|>there")
    assert "".join(stream(tok, [], ids, skip=True)[1]) == "Hithere"
    assert "".join(stream(tok, [], ids, skip=False)[1]) == "Hi<|im_end|>there"


def test_a_split_character_waits_for_its_last_byte(tok):
    ids = tok.encode("a🎉")
    assert len(ids) > 2  # the emoji comes as several byte tokens
    _, deltas = stream(tok, [], ids)
    assert deltas[0] == "a" and all(d == "" for d in deltas[1:-1]) and deltas[-1] == "🎉"


def test_an_unfinished_character_is_released_by_finish(tok):
    ids = tok.encode("a🎉")[:-1]
    detok, deltas = stream(tok, [], ids)
    assert "".join(deltas) == "a"
    assert detok.finish() == tok.decode(ids)[1:]  # the replacement character, as decode gives


# -- stop strings ---------------------------------------------------------------------------------


def reference_stop(text: str, stops: list[str], include: bool) -> tuple[str, str | None]:
    """Read the text one character at a time; stop at the first stop string to complete."""
    for end in range(len(text) + 1):
        done = [s for s in stops if text[:end].endswith(s)]
        if done:
            s = max(done, key=len)
            return (text[:end] if include else text[: end - len(s)]), s
    return text, None


@settings(max_examples=150, deadline=None)
@given(data=st.data(), include=st.booleans())
def test_stop_strings_cut_the_text_wherever_the_tokens_split_it(tok, data, include):
    text = "".join(data.draw(st.lists(st.sampled_from(PIECES), min_size=1, max_size=8)))
    n_stops = data.draw(st.integers(1, 3))
    stops = []
    for _ in range(n_stops):  # substrings of the text (so they do occur), or strings that do not
        a = data.draw(st.integers(0, len(text) - 1))
        b = data.draw(st.integers(a + 1, min(len(text), a + 6)))
        stops.append(data.draw(st.sampled_from([text[a:b], text[a:b] + "#", "zz"])))
    ids = tok.encode(text)
    detok, deltas = stream(tok, [], ids, stop=stops, include=include)
    expected, reason = reference_stop(text, stops, include)
    emitted = ""
    for d in deltas:
        emitted += d
        assert expected.startswith(emitted)  # never anything past the stop, never taken back
    final = "" if reason else detok.finish()
    assert emitted + final == expected == detok.text
    assert detok.stop_reason == reason


def test_stop_string_spanning_tokens(tok):
    ids = tok.encode("The answer is 42. Next question")
    detok, deltas = stream(tok, [], ids, stop=["42. Ne"])
    assert "".join(deltas) == "The answer is " == detok.text
    assert detok.stop_reason == "42. Ne"
    assert detok.append(tok.encode(" more")[0]) == "" and detok.finish() == ""


def test_stop_at_the_very_start(tok):
    detok, deltas = stream(tok, tok.encode("Q:"), tok.encode("Hello there"), stop=["Hel"])
    assert deltas == ["", ""] and detok.text == "" and detok.stop_reason == "Hel"


def test_include_stop_str_in_output(tok):
    detok, deltas = stream(tok, [], tok.encode("one two three four"), stop=[" three"], include=True)
    assert "".join(deltas) == "one two three" == detok.text


def test_a_possible_stop_prefix_is_held_then_released(tok):
    ids = tok.encode("abc e")
    detok, deltas = stream(tok, [], ids[:1], stop=["abcd", "c e!"])
    assert "".join(deltas) == ""  # "abc" could still become "abcd"
    more = [detok.append(t) for t in ids[1:]]
    assert "".join(deltas + more) == "ab"  # "c e" could still become "c e!"
    assert detok.finish() == "c e" and detok.text == "abc e" and detok.stop_reason is None


def test_empty_stop_string_is_refused(tok):
    with pytest.raises(ValueError, match="empty"):
        IncrementalDetokenizer(tok, [], True, [""], False)


def test_a_prompt_ending_inside_a_character_does_not_merge_into_the_output(tok):
    ids = tok.encode("¡")
    assert len(ids) == 2  # two byte tokens
    detok, deltas = stream(tok, ids[:1], ids[1:])
    assert "".join(deltas) + detok.finish() == tok.decode(ids[1:])


def test_min_tokens_defers_stop_strings_as_vllm_does(tok):
    ids = tok.encode("one two three two four")
    assert len(ids) == 5
    detok = IncrementalDetokenizer(tok, [], True, [" two"], False, min_tokens=2)
    assert "".join(detok.append(t) for t in ids) == "one two three" and detok.stop_reason == " two"
    # A stop string that begins in the first min_tokens tokens' text and ends after them counts.
    detok = IncrementalDetokenizer(tok, [], True, ["two three"], False, min_tokens=2)
    assert "".join(detok.append(t) for t in ids) == "one " and detok.stop_reason == "two three"
