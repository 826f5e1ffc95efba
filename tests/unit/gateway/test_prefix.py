from __future__ import annotations

from pagoda.gateway.prefix import prefix_key


def test_chat_key_is_the_leading_rendered_messages():
    system = "You are a helpful assistant for ACME. " * 20
    a = prefix_key(
        {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "Q1"}]}, 64
    )
    b = prefix_key(
        {"messages": [{"role": "system", "content": system}, {"role": "user", "content": "Q2"}]}, 64
    )
    c = prefix_key({"messages": [{"role": "system", "content": "Other " + system}]}, 64)
    assert a == b != c and len(a) == 64


def test_content_parts_and_roles_count():
    parts = [{"type": "text", "text": "hello"}, {"type": "image_url", "image_url": {}}]
    assert prefix_key({"messages": [{"role": "user", "content": parts}]}, 100) == "<user>hello"
    assert prefix_key({"messages": [{"role": "system", "content": "hello"}]}, 100) != "<user>hello"


def test_completion_prompts():
    assert prefix_key({"prompt": "abcdef"}, 3) == "abc"
    assert prefix_key({"prompt": ["abcdef", "zzz"]}, 3) == "abc"
    assert prefix_key({"prompt": [1, 2, 3]}, 2) == "1,"
    assert prefix_key({"prompt": ""}, 3) is None
    assert prefix_key({}, 3) is None
