import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # paged_batch, shared by this folder's tests
