from buildctl.entry import main

main()
