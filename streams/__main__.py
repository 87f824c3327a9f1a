from streams.ops.cli import main

main()
