"""The algorithm cache through Python: keys (from the real descriptors), stats, LRU bound, clear,
save/load. No GPU is needed: entries are planted as a search would insert them."""

import threading

import pytest

import knetcnn
from knetcnn._core import core

FAKE_DEVICES = {0: "Fake GPU|sm_90", 1: "Other GPU|sm_80"}


@pytest.fixture(autouse=True)
def fresh_cache():
    capacity = core.algo_cache_info()["capacity"]
    knetcnn.clear_cache()
    yield
    core.algo_cache_set_capacity(capacity)
    knetcnn.clear_cache()


def conv_key(w=(4, 3, 3, 3), x=(2, 3, 9, 9), padding=1, stride=1, dilation=1, mode=0, group=1, op="conv4",
             dtype="float32", device=0, **kw):
    g = core.conv4_geometry(op, w, x, padding, stride, dilation, mode, group)
    return core.plan_conv(op, g, dtype, device=device, **kw)["key"]


def test_cache_info_fields():
    info = knetcnn.cache_info()
    assert set(info) == {"hits", "misses", "evictions", "size", "capacity", "workspace_buffers",
                         "workspace_bytes", "cudnn_handles"}
    assert info["size"] == info["hits"] == info["misses"] == 0
    assert info["capacity"] >= 64


def test_distinct_configurations_get_distinct_keys():
    base = conv_key()
    assert base == conv_key()
    variants = {
        "dilation": conv_key(dilation=2),
        "device": conv_key(device=1),
        "x strides": conv_key(x_strides=(300, 100, 10, 1)),
        "y strides": conv_key(y_strides=(800, 200, 20, 2)),
        "padding": conv_key(padding=0, x=(2, 3, 11, 11)),
        "stride": conv_key(stride=(2, 1)),
        "mode": conv_key(mode=1),
        "group": conv_key(w=(3, 1, 3, 3), group=3),
        "dtype": conv_key(dtype="float64"),
        "direction": conv_key(op="conv4x"),
        "workspace limit": conv_key(workspace_limit=12345),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants), variants
    with knetcnn.options(algo="deterministic"):
        assert conv_key() != base
    with knetcnn.options(allow_tf32=True):
        assert conv_key() != base
        # TF32 concerns fp32 only: other dtypes keep one key (no duplicate cache entries).
        tf32_keys = {d: conv_key(dtype=d) for d in ("float16", "bfloat16", "float64")}
    for d, key in tf32_keys.items():
        assert key == conv_key(dtype=d) and "|tf32=0|" in key, d
    with knetcnn.options(algo="benchmark"):
        assert conv_key() not in (base, variants["dilation"])


def test_deconv_plan_pads_dy_when_output_padding_reaches_stride():
    g = core.deconv4_geometry("deconv4", (4, 3, 3, 3), (2, 4, 5, 5), 0, 1, 3, 0, 1, 2)
    p = core.plan_conv("deconv4", g, "float32")
    assert p["direction"] == "bwd_data"
    assert p["x_shape"] == (2, 3, 13, 13)  # deconv4's result
    assert p["y_shape"] == (2, 4, 7, 7) and p["y_through_temporary"]  # x (5x5) padded with zeros to 7x7
    assert p["cudnn_forward_dims"] == p["y_shape"]
    ok = core.plan_conv("deconv4", core.deconv4_geometry("deconv4", (4, 3, 3, 3), (2, 4, 5, 5), 0, 2, 1, 0, 1, 1),
                        "float32")
    assert not ok["y_through_temporary"] and ok["y_shape"] == (2, 4, 5, 5)


def test_pool_plan_deterministic_and_unpool_alpha():
    g = core.pool_geometry("pool", (1, 1, 4, 4), 2, 0, None, 0, 1)
    assert core.plan_pool(g)["cudnn_mode"] == 0
    with knetcnn.options(algo="deterministic"):
        assert core.plan_pool(g)["cudnn_mode"] == 3
    u = core.unpool_geometry("unpool", (1, 1, 2, 2), (2, 3), 0, None, 0)
    assert core.plan_pool(u, 2.0)["cudnn_alpha"] == 3.0  # prod(window) / alpha
    assert core.plan_pool(u)["cudnn_mode"] == 1


def test_hits_misses_lru_bound_and_clear():
    core.algo_cache_set_capacity(3)
    keys = [conv_key(x=(1, 3, 8 + i, 8)) for i in range(5)]
    for k in keys:
        core._algo_cache_insert(k, [(1, 3, 1024), (0, 3, 0)])
    info = knetcnn.cache_info()
    assert info["size"] == 3 and info["evictions"] == 2 and info["capacity"] == 3
    assert core.algo_cache_keys() == keys[:1:-1]  # most recent first
    assert core.algo_cache_entry(keys[4]) == [(1, 3, 1024), (0, 3, 0)]
    assert core.algo_cache_entry(keys[0]) is None
    knetcnn.clear_cache()
    info = knetcnn.cache_info()
    assert info["size"] == info["evictions"] == 0 and info["workspace_buffers"] == 0


def test_concurrent_inserts_keep_the_bound():
    core.algo_cache_set_capacity(16)
    base = conv_key()

    def work(t):
        for i in range(200):
            core._algo_cache_insert(f"{base}|t={t}|i={i}", [(i % 8, 3, 0)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    info = knetcnn.cache_info()
    assert info["size"] == 16 and info["evictions"] == 800 - 16


def test_save_load_round_trip(tmp_path):
    k0, k1 = conv_key(), conv_key(device=1, dilation=2)
    core._algo_cache_insert(k0, [(1, 3, 4096), (0, 3, 0)])
    core._algo_cache_insert(k1, [(7, 3, 0)])
    path = tmp_path / "algos.txt"
    assert core.algo_cache_save(str(path), FAKE_DEVICES) == 2
    text = path.read_text()
    assert text.startswith("# knetcnn convolution algorithm cache v1\ncudnn ")
    assert "device 0 Fake GPU|sm_90" in text and "device 1 Other GPU|sm_80" in text
    knetcnn.clear_cache()
    assert core.algo_cache_load(str(path), FAKE_DEVICES) == {"loaded": 2, "skipped": 0, "reason": ""}
    assert core.algo_cache_keys() == [k1, k0]
    assert core.algo_cache_entry(k0) == [(1, 3, 4096), (0, 3, 0)]
    assert core.algo_cache_entry(k1) == [(7, 3, 0)]
    # Device 1 is now another GPU: its entry is skipped, and the report says why.
    knetcnn.clear_cache()
    report = core.algo_cache_load(str(path), {0: "Fake GPU|sm_90", 1: "New GPU|sm_100"})
    assert report["loaded"] == 1 and report["skipped"] == 1 and "device 1" in report["reason"]


def test_public_save_and_load_without_a_gpu(tmp_path):
    core._algo_cache_insert(conv_key(), [(1, 3, 0)])
    path = tmp_path / "cache.txt"
    assert knetcnn.save_cache(path) == 1
    report = knetcnn.load_cache(path)
    if core.device_unavailable_reason(0):
        # Here device 0 has no name: nothing is loaded, and the reason says the device is absent.
        assert report["loaded"] == 0 and report["skipped"] == 1 and "absent" in report["reason"]
    else:
        assert report == {"loaded": 1, "skipped": 0, "reason": ""}


def test_bad_files_are_value_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("not a cache\n")
    with pytest.raises(ValueError, match="line 1: not a knetcnn algorithm cache file"):
        knetcnn.load_cache(bad)
    bad.write_text("# knetcnn convolution algorithm cache v1\ncudnn 1\nentry conv|dev=0|dir=fwd 42:3:0\n")
    with pytest.raises(ValueError, match="line 3"):
        knetcnn.load_cache(bad)
    with pytest.raises(ValueError, match="cannot read"):
        knetcnn.load_cache(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="cannot write"):
        knetcnn.save_cache(tmp_path / "no" / "such" / "dir" / "c.txt")


def test_keys_carry_the_pointer_alignment():
    # plan_conv describes cudaMalloc'ed arrays (256-byte aligned): 16, the most a key records.
    assert conv_key().endswith("|align=16,16,16")


def test_inserted_entries_are_held_to_their_key():
    key = conv_key()  # float32, allow_tf32=False
    with pytest.raises(ValueError, match="TF32"):
        core._algo_cache_insert(key, [(1, 1, 0)])  # CUDNN_TENSOR_OP_MATH
    with pytest.raises(ValueError, match="limit"):
        core._algo_cache_insert(conv_key(workspace_limit=100), [(1, 3, 101)])
    with knetcnn.options(algo="deterministic"):
        det = conv_key(op="conv4w")
    with pytest.raises(ValueError, match="not deterministic"):
        core._algo_cache_insert(det, [(0, 3, 0)])  # CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0
    core._algo_cache_insert(det, [(1, 3, 0)])
    with pytest.raises(ValueError, match="no 'dtype' field"):
        core._algo_cache_insert("conv|dev=0|dir=fwd", [(1, 3, 0)])
    assert knetcnn.cache_info()["size"] == 1


def test_load_skips_entries_their_key_forbids(tmp_path):
    good, tf32 = conv_key(), conv_key(dilation=2)
    path = tmp_path / "tampered.txt"
    core._algo_cache_insert(good, [(1, 3, 0)])
    core._algo_cache_insert(tf32, [(1, 3, 0)])
    core.algo_cache_save(str(path), FAKE_DEVICES)
    # Hand-edit one entry to TENSOR_OP math, which TF32 could slip into on fp32 data.
    path.write_text(path.read_text().replace(f"{tf32} 1:3:0", f"{tf32} 1:1:0"))
    knetcnn.clear_cache()
    report = core.algo_cache_load(str(path), FAKE_DEVICES)
    assert report["loaded"] == 1 and report["skipped"] == 1, report
    assert "break their own key's rules" in report["reason"] and "TF32" in report["reason"]
    assert core.algo_cache_keys() == [good]


def test_cache_info_and_clear_from_many_threads():
    # The info and clear bindings run without the GIL: many threads at once must neither
    # deadlock nor see torn counters.
    errors = []

    def work():
        try:
            for _ in range(50):
                info = knetcnn.cache_info()
                assert info["size"] <= info["capacity"]
                knetcnn.clear_cache()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
