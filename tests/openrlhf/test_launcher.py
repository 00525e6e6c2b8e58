"""bai-train option split, --help, and every recipe's argv through OpenRLHF's REAL parser."""

import glob
import os
import subprocess
import sys
from dataclasses import fields

import pytest

pytest.importorskip("openrlhf")

from bai_core.config import ENV_PREFIX, BaiConfig  # noqa: E402
from openrlhf_patches import activate, launcher  # noqa: E402
from openrlhf_patches.argv import absolutize_paths, ray_resources  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SHIMS = os.path.join(REPO, "openrlhf_patches", "cpu_shims")
RECIPES = sorted(p for p in glob.glob(os.path.join(REPO, "recipes", "openrlhf", "*.sh"))
                 if not p.endswith("common.sh"))


class Parsed(Exception):
    """Sentinel: OpenRLHF parsed and validated its args and reached train()."""

    def __init__(self, args):
        super().__init__("parsed")
        self.parsed = args


@pytest.fixture(autouse=True)
def clean_bai_env(monkeypatch):
    for key in [ENV_PREFIX + f.name.upper() for f in fields(BaiConfig)] + [
            activate.CPU_ENV, activate.SMOKE_ENV, "BAI_CONFIG"]:
        monkeypatch.setenv(key, "")  # recorded, so teardown restores whatever main() sets
        monkeypatch.delenv(key)


@pytest.fixture
def parse_only(monkeypatch):
    """Run bai-train's main() up to OpenRLHF's train(): no Ray, no models."""
    import openrlhf.utils
    import ray

    def stop(args):
        raise Parsed(args)

    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # train() skips its ray.init
    # train_ppo_ray re-imports `get_strategy` from openrlhf.utils when run_module executes it
    monkeypatch.setattr(openrlhf.utils, "get_strategy", stop)

    def run(argv):
        with pytest.raises(Parsed) as info:
            launcher.main(argv)
        return info.value.parsed

    return run


def recipe_argv(path, **env):
    out = subprocess.run(["bash", path], env=dict(os.environ, DRY_RUN="1", **env),
                         capture_output=True, timeout=60, check=True)
    argv = out.stdout.decode().split("\0")
    assert argv[-1] == ""
    return argv[:-1]


def test_recipes_exist():
    names = {os.path.basename(p) for p in RECIPES}
    assert {"ppo_bai_7b.sh", "reinforce_pp_bai_7b.sh", "grpo_bai_7b.sh", "ppo_bai_1.5b.sh",
            "ppo_control_r1distill_7b.sh"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipe_accepted_by_openrlhf_parser(path, parse_only):
    argv = recipe_argv(path)
    args = parse_only(argv)
    name = os.path.basename(path)
    assert args.actor.model_name_or_path
    assert args.vllm.num_engines == 8 and args.train.colocate_all
    assert args.rollout.max_new_tokens == 8192 and args.data.max_len == 1024 + 8192
    assert args.actor.adam.lr == 1e-6
    assert args.actor.lr_scheduler == "constant_with_warmup"
    assert os.path.isabs(args.ckpt.output_dir)
    if name.startswith("ppo"):
        assert args.algo.advantage.estimator == "gae"
        assert args.algo.advantage.lambd == 0.95 and args.algo.advantage.gamma == 1.0
        assert args.critic.model_name_or_path  # explicit, not OpenRLHF's implicit default
        assert args.critic.adam.lr == 1e-6
    if name.startswith("reinforce"):
        assert args.algo.advantage.estimator == "reinforce_baseline"
        assert args.critic.model_name_or_path is None
    if name.startswith("grpo"):
        assert args.algo.advantage.estimator == "group_norm"
    if "control" in name:
        assert args.actor.model_name_or_path == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    else:
        assert os.path.isabs(args.actor.model_name_or_path)
    # our options were taken out and passed on as env vars
    assert os.environ["BAI_JSONL"] == os.path.join(args.ckpt.output_dir, "bai_metrics.jsonl")


def test_ppo_recipe_with_reward_model_inits_critic_from_it(parse_only):
    argv = recipe_argv(os.path.join(REPO, "recipes", "openrlhf", "ppo_bai_7b.sh"),
                       REWARD_MODEL="org/qwen2.5-rm", NGPUS="4")
    args = parse_only(argv)
    assert args.reward.model_name_or_path == "org/qwen2.5-rm"
    assert args.critic.model_name_or_path == "org/qwen2.5-rm"
    assert args.reward.remote_url is None
    assert args.vllm.num_engines == 4 and args.actor.num_gpus_per_node == 4


def test_bai_options_are_split_off(parse_only):
    args = parse_only([
        "--actor.model_name_or_path", "m", "--reward.remote_url", "r.py",
        "--bai.collapse_drop", "0.3",
        "--bai.stop_on_collapse", "--reward.clip_range", "-5", "5", "--bai.jsonl", "x/m.jsonl",
        "--bai.reward_dip_std", "3",
    ])
    assert list(args.reward.clip_range) == [-5.0, 5.0]
    assert not hasattr(args, "bai")
    cfg = BaiConfig.from_env()
    assert cfg.collapse_drop == 0.3 and cfg.stop_on_collapse is True
    assert cfg.reward_dip_std == 3.0
    assert cfg.jsonl == os.path.abspath("x/m.jsonl")


def test_bad_openrlhf_flag_rejected(parse_only, capsys):
    with pytest.raises(SystemExit) as info:
        launcher.main(["--actor.model_name_or_path", "m", "--prompt_max_len", "1024"])
    assert info.value.code == 2
    assert "--prompt_max_len" in capsys.readouterr().err


def test_misspelled_bai_flag_rejected(parse_only, capsys):
    with pytest.raises(SystemExit) as info:
        launcher.main(["--actor.model_name_or_path", "m", "--bai.colapse_drop", "0.3"])
    assert info.value.code == 2


@pytest.mark.parametrize("bad", [["--bai.collapse_drop", "1.5"], ["--bai.ema", "0"],
                                 ["--bai.bucket_width", "0"], ["--bai.baseline_steps", "x"]])
def test_bad_bai_values_rejected_before_training(bad, parse_only):
    with pytest.raises(SystemExit) as info:
        launcher.main(["--actor.model_name_or_path", "m", *bad])
    assert info.value.code == 2


def test_help_lists_both(capsys):
    with pytest.raises(SystemExit) as info:
        launcher.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.index("--bai.collapse_drop") < out.index("--actor.model_name_or_path")
    for opt in ("--bai.stop_on_collapse", "--bai.reward_dip_std", "--bai.baseline_steps",
                "--bai.jsonl", "--algo.advantage.estimator", "--reward.remote_url"):
        assert opt in out


def test_openrlhf_ray_init_gets_the_resolved_config(monkeypatch):
    from openrlhf_patches import cpu_mode

    monkeypatch.setenv("BAI_COLLAPSE_DROP", "0.4")
    assert activate.arm() is True
    kw = activate.init_kwargs({"runtime_env": {"env_vars": {"NCCL_DEBUG": "WARN"}}}, [])
    env = kw["runtime_env"]["env_vars"]
    assert env["NCCL_DEBUG"] == "WARN"  # OpenRLHF's own
    assert env["BAI_COLLAPSE_DROP"] == "0.4" and env["BAI_CPU"] == "0"
    assert BaiConfig.from_env(env) == BaiConfig(collapse_drop=0.4)
    assert "address" not in kw and "num_gpus" not in kw  # a GPU launch keeps Ray's defaults
    monkeypatch.setattr(activate, "cpu_requested", lambda: True)
    monkeypatch.setattr(cpu_mode, "env_vars", lambda: {"DS_ACCELERATOR": "cpu"})
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    kw = activate.init_kwargs({}, ["--actor.num_gpus_per_node", "1", "--ref.num_gpus_per_node",
                                   "1", "--vllm.num_engines", "1"])
    assert kw["address"] == "local" and kw["_node_ip_address"] == "127.0.0.1"
    assert kw["num_gpus"] == 3 and kw["include_dashboard"] is False
    assert kw["runtime_env"]["env_vars"]["BAI_CPU"] == "1"
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")  # ray job submit: join it
    kw = activate.init_kwargs({}, [])
    assert "address" not in kw and "num_gpus" not in kw
    assert kw["runtime_env"]["env_vars"]["DS_ACCELERATOR"] == "cpu"


def test_a_bad_value_turns_the_hooks_off_in_every_worker(monkeypatch):
    monkeypatch.setenv("BAI_EMA", "2")
    assert activate.arm() is False
    assert activate.init_kwargs({}, [])["runtime_env"]["env_vars"]["BAI_DISABLE"] == "1"
    monkeypatch.delenv("BAI_EMA")
    assert activate.arm() is True


def test_inherited_bai_cpu_is_cleared_without_the_flag(parse_only, monkeypatch):
    monkeypatch.setenv("BAI_CPU", "1")
    monkeypatch.setenv("BAI_CPU_SMOKE_TEST", "1")
    parse_only(["--actor.model_name_or_path", "m", "--reward.remote_url", "r.py"])
    assert "BAI_CPU" not in os.environ and "BAI_CPU_SMOKE_TEST" not in os.environ
    assert activate.worker_env()["BAI_CPU"] == "0"  # overrides what Ray workers inherit


def bai_train(*argv: str, pythonpath: str = "", **env: str) -> subprocess.CompletedProcess:
    """bai-train in a subprocess, with flash-attn importable (the CPU stand-in) and no Ray."""
    path = os.pathsep.join(p for p in (pythonpath, SHIMS) if p)
    return subprocess.run([os.path.join(os.path.dirname(sys.executable), "bai-train"), *argv],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=path, **env))


def assert_refused(out: subprocess.CompletedProcess, needle: str) -> None:
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("bai-train: error: ") and needle in last, last
    assert "Traceback" not in out.stderr
    assert "Started a local Ray" not in out.stderr and "ray.init" not in out.stderr


def test_other_openrlhf_version_is_refused_before_ray_starts(tmp_path):
    import openrlhf

    # the same OpenRLHF code, installed as 0.11.1: a folder with the package and its dist-info
    (tmp_path / "openrlhf").symlink_to(os.path.dirname(openrlhf.__file__))
    fake = tmp_path / "openrlhf-0.11.1.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: openrlhf\nVersion: 0.11.1\n")
    out = bai_train("--actor.model_name_or_path", "m", pythonpath=str(tmp_path))
    assert_refused(out, "OpenRLHF 0.11.1 is installed, bai-train supports 0.11.2")
    assert "--bai.disable" in out.stderr and "pip install openrlhf==0.11.2" in out.stderr


def test_openrlhf_argument_assertion_is_one_line_before_ray_starts():
    out = bai_train("--actor.model_name_or_path", "m", "--reward.remote_url", "r.py",
                    "--train.colocate_all", "--train.async_enable", "--vllm.enable_sleep",
                    "--vllm.num_engines", "8")
    assert_refused(out, "Async RLHF is not supported with --vllm.enable_sleep")


@pytest.mark.parametrize("argv, needle", [
    (["--train.colocate_all", "--actor.num_gpus_per_node", "8", "--ref.num_gpus_per_node", "8",
      "--vllm.num_engines", "3", "--vllm.tensor_parallel_size", "2"],
     "3 x --vllm.tensor_parallel_size 2 = 6 must equal"),
    (["--train.colocate_all", "--actor.num_gpus_per_node", "8", "--ref.num_gpus_per_node", "4",
      "--vllm.num_engines", "8"], "same --actor.num_gpus_per_node and --ref.num_gpus_per_node"),
    (["--vllm.num_engines", "1", "--vllm.gpu_memory_utilization", "1.5"],
     "--vllm.gpu_memory_utilization must be in (0, 1]"),
    (["--actor.num_gpus_per_node", "two"], "--actor.num_gpus_per_node must be an integer"),
])
def test_placement_arithmetic_is_checked_before_ray_starts(argv, needle):
    assert_refused(bai_train("--actor.model_name_or_path", "m", "--reward.remote_url", "r.py",
                             *argv), needle)


def test_recipe_async_mode_drops_the_sleep_flags(parse_only):
    argv = recipe_argv(os.path.join(REPO, "recipes", "openrlhf", "reinforce_pp_bai_7b.sh"),
                       ASYNC="1")
    assert "--vllm.enable_sleep" not in argv and "--ds.enable_sleep" not in argv
    args = parse_only(argv)  # OpenRLHF's own checks accept it
    assert args.train.async_enable is True


def test_unknown_flag_rejected_before_ray_starts():
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "bai-train"),
                          "--actor.model_name_or_path", "m", "--actor.lrr", "1", "--bai.cpu",
                          "--vllm.sync_backend", "gloo", "--vllm.enforce_eager",
                          "--ds.attn_implementation", "eager"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "--actor.lrr" in out.stderr.strip().splitlines()[-1]
    assert "ray.init" not in out.stderr and "Started a local Ray" not in out.stderr


def test_relative_paths_become_absolute(tmp_path):
    (tmp_path / "actor").mkdir()
    (tmp_path / "r.py").write_text("")
    argv = ["--actor.model_name_or_path", "actor", "--critic.model_name_or_path", "org/hub-id",
            "--reward.remote_url=r.py", "--ckpt.output_dir", "runs/x", "--data.prompt_dataset",
            "org/data", "--train.batch_size", "8"]
    out = absolutize_paths(argv, cwd=str(tmp_path))
    assert out == ["--actor.model_name_or_path", str(tmp_path / "actor"),
                   "--critic.model_name_or_path", "org/hub-id",  # not a local path: a hub id
                   f"--reward.remote_url={tmp_path / 'r.py'}",
                   "--ckpt.output_dir", str(tmp_path / "runs" / "x"),  # outputs always
                   "--data.prompt_dataset", "org/data", "--train.batch_size", "8"]


@pytest.mark.parametrize("argv, gpus", [
    (["--actor.num_gpus_per_node", "1", "--ref.num_gpus_per_node", "1",
      "--vllm.num_engines", "1", "--reward.remote_url", "r.py"], 3),
    (["--actor.num_gpus_per_node", "1", "--ref.num_gpus_per_node", "1", "--algo.kl.init_coef",
      "0", "--vllm.num_engines", "2", "--vllm.tensor_parallel_size", "2"], 5),
    (["--actor.num_gpus_per_node", "1", "--critic.model_name_or_path", "c",
      "--critic.num_gpus_per_node", "2", "--reward.model_name_or_path", "rm",
      "--reward.num_gpus_per_node", "1", "--algo.kl.init_coef", "0"], 4),
])
def test_ray_resources_count_the_gpus_the_recipe_asks_for(argv, gpus):
    res = ray_resources(argv)
    assert res["num_gpus"] == gpus and res["num_cpus"] >= gpus + 2


@pytest.mark.parametrize("extra, needle", [
    (["--train.colocate_all"], "--train.colocate_all"),
    (["--ds.packing_samples"], "--ds.packing_samples"),
    (["--vllm.sync_backend", "nccl"], "got 'nccl'"),
    (["--ds.ring_attn_size", "2"], "--ds.ring_attn_size 2"),
])
def test_cpu_mode_refuses_what_it_cannot_run(extra, needle):
    from openrlhf_patches.cpu_mode import check_argv

    ok = ["--vllm.sync_backend", "gloo", "--vllm.enforce_eager",
          "--ds.attn_implementation", "eager"]
    assert check_argv(ok) is None
    assert needle in check_argv(ok + extra)
    assert "--vllm.enforce_eager" in check_argv(ok[:2] + ok[3:])


@pytest.mark.parametrize("path", [p for p in RECIPES if "control" not in p and "1.5b" not in p],
                         ids=os.path.basename)
def test_recipe_cpu_smoke_mode_passes_openrlhf_parser(path, parse_only, monkeypatch):
    from openrlhf_patches import cpu_mode

    installed = []
    monkeypatch.setattr(cpu_mode, "install", lambda: installed.append(1) or True)  # not here
    args = parse_only(recipe_argv(path, CPU_SMOKE="1"))
    assert installed == [1]
    assert args.vllm.num_engines == 1 and not args.train.colocate_all
    assert args.vllm.sync_backend == "gloo" and args.ds.attn_implementation == "eager"


@pytest.mark.parametrize("path", [p for p in RECIPES if "control" not in p], ids=os.path.basename)
def test_recipe_merges_from_an_existing_config(path, tmp_path):
    out = subprocess.run(["bash", path], env=dict(os.environ, DRY_RUN="1",
                                                  ACTOR=str(tmp_path / "absent")),
                         capture_output=True, text=True, timeout=60, check=True)
    line = next(x for x in out.stderr.splitlines() if "would run: mergekit-yaml" in x)
    config = line.split("mergekit-yaml", 1)[1].split()[0]
    assert os.path.isfile(config), config
    # an existing actor is used as is
    (tmp_path / "absent").mkdir()
    (tmp_path / "absent" / "config.json").write_text("{}")
    out = subprocess.run(["bash", path], env=dict(os.environ, DRY_RUN="1",
                                                  ACTOR=str(tmp_path / "absent")),
                         capture_output=True, text=True, timeout=60, check=True)
    assert "mergekit-yaml" not in out.stderr


def test_stale_extension_build_lock_is_removed_fresh_one_kept(tmp_path, monkeypatch):
    from openrlhf_patches.cpu_mode import clear_stale_build_locks, extensions_dir

    old, new = tmp_path / "fused_adam" / "lock", tmp_path / "shm" / "lock"
    for lock in (old, new):
        lock.parent.mkdir()
        lock.write_text("")
    os.utime(old, (1, 1))
    assert clear_stale_build_locks(str(tmp_path)) == [str(old)]
    assert not old.exists() and new.exists()
    first = extensions_dir()
    monkeypatch.setattr(sys, "prefix", "/some/other/venv")
    assert extensions_dir() != first  # one build cache per Python environment
