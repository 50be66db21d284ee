from moments_export.cli import main

raise SystemExit(main())
