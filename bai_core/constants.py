"""Names shared by every adapter and tool: think tags, file names, environment variables."""

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
JSONL_NAME = "bai_metrics.jsonl"  # per-step metric rows, in the run's output folder
STOP_FILE = "bai_stop.json"  # beside the JSONL when an early stop fired
SAMPLES_NAME = "bai_samples.jsonl"  # beside the JSONL: --bai.samples responses a step, as text
ENV_PREFIX = "BAI_"  # BAI_<FIELD> environment variables carry BaiConfig fields
TRACEBACK_ENV = "BAI_TRACEBACK"  # "1": tools print the traceback behind a one-line error
