from streamdrift.streams.ops.cli import main

main()
