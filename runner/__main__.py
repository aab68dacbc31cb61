from runner._cli import main

raise SystemExit(main())
