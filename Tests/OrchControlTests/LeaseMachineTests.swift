import OrchControl
import OrchCore
import Testing

/// Leading by the lease, input by input with the time given: a follower tries to take the
/// lease, leads once it has it, renews it every 2 s, and stops acting 4 s after the start
/// of its last successful renewal, by its own clock, whatever the database says after;
/// the lease found another's, or lost, steps it down at once; a planned stop releases it.
@Suite struct LeaseMachineTests {
    func at(_ seconds: Double) -> Moment { Moment(nanoseconds: Int64(seconds * 1e9)) }

    func attempts(_ effects: [LeaseMachine.Effect]) -> [LeaseMachine.Effect] {
        effects.filter { if case .wake = $0 { false } else { true } }
    }

    @Test func aFollowerTakesTheLeaseLeadsAndRenewsIt() {
        var machine = LeaseMachine()
        #expect(attempts(machine.handle(.timer, now: at(0))) == [.acquire])
        #expect(attempts(machine.handle(.timer, now: at(0.5))).isEmpty, "one attempt out at a time")
        #expect(attempts(machine.handle(.acquired(epoch: 7, startedAt: at(0)), now: at(0.1))) == [.lead(epoch: 7)])
        #expect(machine.role == .leader(epoch: 7))
        #expect(attempts(machine.handle(.timer, now: at(2))) == [.renew(epoch: 7)], "renewed every 2 s")
        #expect(attempts(machine.handle(.renewed(startedAt: at(2)), now: at(2.05))).isEmpty)
        #expect(attempts(machine.handle(.timer, now: at(4))) == [.renew(epoch: 7)])
        #expect(attempts(machine.handle(.renewed(startedAt: at(4)), now: at(4.05))).isEmpty)
        #expect(attempts(machine.handle(.timer, now: at(5.9))).isEmpty, "still leading: renewed at 4 s")
        #expect(machine.isLeader)
    }

    /// Found by the simulator (a slow database): an acquire out past the next turn made the
    /// machine ask to be woken at that turn, passed already, and the shell spun on it.
    @Test func anAttemptOutPastItsTurnAsksForNoWakeInThePast() {
        var machine = LeaseMachine()
        #expect(attempts(machine.handle(.timer, now: at(0))) == [.acquire])
        let late = machine.handle(.timer, now: at(2.5))
        #expect(late.isEmpty, "the acquire is still out: nothing to do, no wake in the past: \(late)")
        let acquired = machine.handle(.acquired(epoch: 3, startedAt: at(0)), now: at(3))
        #expect(attempts(acquired) == [.lead(epoch: 3), .renew(epoch: 3)], "its turn has passed: renewed at once")
        // The renewal hangs: the only wake is the moment to stop acting.
        let waiting = machine.handle(.timer, now: at(3.5))
        #expect(waiting == [.wake(at: at(4))], "\(waiting)")
    }

    @Test func aReleasedLeaseIsTriedAtOnceByAFollowerAndIgnoredByTheLeader() {
        var machine = LeaseMachine()
        _ = machine.handle(.timer, now: at(0))
        _ = machine.handle(.heldBy(holder: "m2", epoch: 4), now: at(0.01))
        #expect(attempts(machine.handle(.timer, now: at(0.5))).isEmpty, "not its turn yet")
        #expect(attempts(machine.handle(.released, now: at(0.6))) == [.acquire], "m2 released it: tried at once")
        #expect(attempts(machine.handle(.released, now: at(0.7))).isEmpty, "one attempt out at a time")
        _ = machine.handle(.acquired(epoch: 5, startedAt: at(0.6)), now: at(0.65))
        #expect(attempts(machine.handle(.released, now: at(1))).isEmpty, "a leader renews on its own turn")
        #expect(attempts(machine.handle(.timer, now: at(2.7))) == [.renew(epoch: 5)])
    }

    @Test func aLeaderWhoseRenewalsGoUnansweredStopsActingAfterFourSeconds() {
        var machine = LeaseMachine()
        _ = machine.handle(.timer, now: at(0))
        _ = machine.handle(.acquired(epoch: 1, startedAt: at(0)), now: at(0.01))
        let renewal = machine.handle(.timer, now: at(2))
        #expect(attempts(renewal) == [.renew(epoch: 1)])
        #expect(renewal.contains(.wake(at: at(4))), "woken when acting must stop")
        // The database never answers this renewal.
        #expect(attempts(machine.handle(.timer, now: at(3.99))).isEmpty && machine.isLeader)
        let down = machine.handle(.timer, now: at(4))
        #expect(attempts(down).first == .stepDown(reason: "no renewal of the lease for 4s"), "\(down)")
        #expect(!machine.isLeader)
        // A late answer to the old renewal does not make it lead again.
        #expect(attempts(machine.handle(.renewed(startedAt: at(2)), now: at(4.5))) == [.acquire])
        #expect(!machine.isLeader, "a follower takes the lease again, it does not renew it")
    }

    @Test func theLeaseFoundAnothersOrLostStepsDownAtOnceAndFailuresAreRetried() {
        var machine = LeaseMachine()
        _ = machine.handle(.timer, now: at(0))
        #expect(attempts(machine.handle(.heldBy(holder: "m2", epoch: 4), now: at(0.01))).isEmpty)
        #expect(machine.leader?.holder == "m2" && !machine.isLeader)
        #expect(attempts(machine.handle(.timer, now: at(2))) == [.acquire], "a follower tries again every 2 s")
        #expect(attempts(machine.handle(.failed("connection refused"), now: at(2.1))).isEmpty)
        #expect(attempts(machine.handle(.timer, now: at(4))) == [.acquire])
        _ = machine.handle(.acquired(epoch: 5, startedAt: at(4)), now: at(4.01))
        _ = machine.handle(.timer, now: at(6))
        #expect(attempts(machine.handle(.lost(holder: "m3"), now: at(6.01))) == [.stepDown(reason: "the lease went to m3")])
        _ = machine.handle(.timer, now: at(8))
        _ = machine.handle(.acquired(epoch: 9, startedAt: at(8)), now: at(8.01))
        _ = machine.handle(.timer, now: at(10))
        #expect(attempts(machine.handle(.heldBy(holder: "m4", epoch: 10), now: at(10.01))) == [.stepDown(reason: "the lease is m4's (epoch 10)")])
    }

    @Test func aPlannedStopReleasesTheLeaseAndTakesNoOther() {
        var machine = LeaseMachine()
        _ = machine.handle(.timer, now: at(0))
        _ = machine.handle(.acquired(epoch: 3, startedAt: at(0)), now: at(0.01))
        #expect(machine.handle(.stopping, now: at(1)) == [.stepDown(reason: "stopping"), .release(epoch: 3)])
        #expect(machine.handle(.timer, now: at(5)).isEmpty, "stopped: no more attempts")
        #expect(machine.handle(.acquired(epoch: 4, startedAt: at(4)), now: at(5)) == [.release(epoch: 4)], "one taken meanwhile is given back")
    }
}
