"""`python -m sfsr.watermark detect|embed ...`"""

import sys

from sfsr.watermark import main

sys.exit(main())
