import ArgumentParser
@main struct Orchctl: ParsableCommand { func run() {} }
