"""bai-demo: the offline model families and the end-to-end demo (not part of the plugin)."""
