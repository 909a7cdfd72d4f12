from amm.cli import main

raise SystemExit(main())
