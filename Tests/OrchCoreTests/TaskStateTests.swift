import OrchCore
import Testing

@Suite struct TaskStateTests {
    /// The expected matrix, written out by hand: row = from, column = to, in the order
    /// pending, scheduled, running, stopping, completed, failed, lost.
    static let expected: [TaskState: String] = [
        //            P S R T C F L
        .pending:   ". x . . x x .",
        .scheduled: "x . x x x x x",
        .running:   ". . . x x x x",
        .stopping:  ". . . . x . x",
        .completed: "x . . . . . .",
        .failed:    "x . . . . . .",
        .lost:      "x . x . x x .",
    ]
    static let order: [TaskState] = [.pending, .scheduled, .running, .stopping, .completed, .failed, .lost]

    @Test("Every pair of states against the matrix written out literally", arguments: TaskState.allCases)
    func transitionsMatchTheMatrix(from: TaskState) throws {
        let row = try #require(Self.expected[from]).split(separator: " ")
        try #require(row.count == Self.order.count)
        for (index, to) in Self.order.enumerated() {
            #expect(from.canTransition(to: to) == (row[index] == "x"), "\(from) -> \(to)")
        }
    }

    @Test func everyStateIsInTheMatrix() {
        #expect(Set(Self.order) == Set(TaskState.allCases))
    }
}
