"""``python -m spark_nodes``: the ``spark-nodes`` command."""

import sys

from spark_nodes.cli import main

sys.exit(main())
