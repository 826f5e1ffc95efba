"""The strategic merge of spec.pod.template over the rendered pod template."""

from pagoda.operator.resources.merge import strategic_merge

BASE = {
    "spec": {
        "containers": [
            {"name": "engine", "image": "e", "env": [{"name": "A", "value": "1"}]},
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "tolerations": [{"key": "a"}],
        "enableServiceLinks": False,
    }
}


def test_named_lists_merge_by_key_and_others_are_replaced():
    out = strategic_merge(
        BASE,
        {
            "spec": {
                "containers": [
                    {"name": "engine", "env": [{"name": "A", "value": "2"}, {"name": "B"}]},
                    {"name": "side", "image": "s"},
                ],
                "tolerations": [{"key": "b"}],
            }
        },
    )
    engine, side = out["spec"]["containers"]
    assert engine == {
        "name": "engine",
        "image": "e",
        "env": [{"name": "A", "value": "2"}, {"name": "B"}],
    }
    assert side == {"name": "side", "image": "s"}
    assert out["spec"]["tolerations"] == [{"key": "b"}]
    assert BASE["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]  # base untouched


def test_null_and_patch_delete_remove():
    out = strategic_merge(
        BASE,
        {"spec": {"enableServiceLinks": None, "volumes": [{"name": "tmp", "$patch": "delete"}]}},
    )
    assert "enableServiceLinks" not in out["spec"] and out["spec"]["volumes"] == []
