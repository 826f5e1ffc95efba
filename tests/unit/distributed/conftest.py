import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tp_model_harness
sys.path.insert(0, str(Path(__file__).parents[1] / "models"))  # paged_batch
