from muxlang.cli import main

raise SystemExit(main())
