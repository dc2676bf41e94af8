"""Policy names, with no dependencies: the CLI builds its parser from them cheaply."""

# Policies the edge understands. `hybrid` is the cost-aware planner; the next three give
# every foreground tile diffusion SR with a fixed split; the last four are references only.
POLICIES = (
    "hybrid", "edge-diffusion-all", "split-device", "split-edge",
    "edge-light-all", "device-light-all", "direct-hr", "top-k",
)
DEFAULT_POLICY = "hybrid"

# How tiles may travel (`tile_quality`): lossless always, or lossy JPEG when the planner
# predicts it saves enough (see `images.LOSSY_BY_QUALITY`).
TILE_QUALITIES = ("lossless", "high", "balanced")
