import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tiny_checkpoint, shared by this folder's tests
sys.path.insert(0, str(Path(__file__).parents[1] / "models"))  # paged_batch
