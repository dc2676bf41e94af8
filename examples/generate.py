"""Generate one image through an edge with the blocking client.

    hybridsr-edge serve --preset tiny &        # or a real preset on a GPU machine
    python examples/generate.py ws://127.0.0.1:8765 "a red lighthouse at dusk"
"""

import sys

from hybridsr.sdk import HybridClient, HybridSRError


def main() -> int:
    edge = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8765"
    prompt = sys.argv[2] if len(sys.argv) > 2 else "a red lighthouse at dusk"
    try:
        with HybridClient(edge) as client:
            result = client.generate(prompt, width=512, height=512, seed=7)
    except HybridSRError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result.image.save("generated.png")
    t = result.timings
    print(f"generated.png: {result.image.size}, total {t.total:.2f}s, "
          f"edge tiles {sum(d == 'edge' for d in result.destinations.values())}"
          f"/{len(result.destinations)}, degraded={result.degraded}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
