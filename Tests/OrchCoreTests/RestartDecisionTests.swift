import Foundation
@testable import OrchCore
import Testing

@Suite struct RestartDecisionTests {
    let now = Date(timeIntervalSince1970: 1_700_000_000)

    func ended(_ state: TaskState, mode: RestartMode, max: Int? = nil, restarts: Int = 0, desired: DesiredState = .run, ranFor: Double? = nil) -> TaskRecord {
        var record = TaskRecord(id: TaskID(rawValue: "t"), spec: TaskSpec(image: "i", restartPolicy: RestartPolicy(mode: mode, maxRestarts: max)), now: now)
        record.state = state
        record.restartCount = restarts
        record.desiredState = desired
        record.startedAt = ranFor.map { now.addingTimeInterval(-$0) }
        return record
    }

    @Test func policiesDecideWhichEndingsRestart() {
        #expect(RestartDecision.decide(for: ended(.failed, mode: .never), now: now) == .leave(reason: nil))
        #expect(RestartDecision.decide(for: ended(.failed, mode: .onFailure), now: now) == .restart(after: .seconds(1)))
        #expect(RestartDecision.decide(for: ended(.lost, mode: .onFailure), now: now) == .restart(after: .seconds(1)))
        #expect(RestartDecision.decide(for: ended(.completed, mode: .onFailure), now: now) == .leave(reason: nil))
        #expect(RestartDecision.decide(for: ended(.completed, mode: .always), now: now) == .restart(after: .seconds(1)))
    }

    @Test func aStoppedTaskIsNeverRestarted() {
        #expect(RestartDecision.decide(for: ended(.failed, mode: .always, desired: .stop), now: now) == .leave(reason: nil))
    }

    @Test func backoffDoublesToFiveMinutesAndTheMaximumGivesUp() {
        #expect(RestartDecision.decide(for: ended(.failed, mode: .onFailure, restarts: 3), now: now) == .restart(after: .seconds(8)))
        #expect(RestartDecision.decide(for: ended(.failed, mode: .onFailure, restarts: 12), now: now) == .restart(after: .seconds(300)))
        #expect(RestartDecision.decide(for: ended(.failed, mode: .onFailure, max: 2, restarts: 2), now: now) == .leave(reason: "gave up after 2 restarts"))
    }

    @Test func tenMinutesOfCleanRunningResetsTheCount() {
        #expect(RestartDecision.decide(for: ended(.failed, mode: .onFailure, max: 2, restarts: 2, ranFor: 700), now: now) == .restart(after: .seconds(1)))
        #expect(RestartDecision.decide(for: ended(.failed, mode: .onFailure, restarts: 5, ranFor: 60), now: now) == .restart(after: .seconds(32)))
    }
}
