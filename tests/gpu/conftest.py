import sys
from pathlib import Path

# tiny_models, paged_batch and the family table of the CPU tier, repeated here in bf16.
sys.path.insert(0, str(Path(__file__).parents[1] / "unit" / "models"))
