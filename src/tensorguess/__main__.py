from tensorguess.cli import main

raise SystemExit(main())
