import Foundation
import OrchControl
import OrchCore

/// What the operator asked and was answered (``FaultProfile/operators``).
struct OperatorBook {
    enum Request {
        case drain(NodeID, drain: Bool, move: Bool)
        /// A purge, with what the clients' book held of the task until it is answered.
        case purge(TaskID, created: Date?, acknowledged: TaskSpec?, stopped: (at: Moment, attempt: Int)?)
    }

    var pending: [RequestID: Request] = [:]
    /// Nodes whose drain was answered, and not their undrain since.
    var drained: Set<NodeID> = []
    /// Purges refused for a store failure: applied all the same, stored by the retry
    /// unless the manager crashes first.
    var limbo: [(task: TaskID, created: Date?, acknowledged: TaskSpec?, stopped: (at: Moment, attempt: Int)?)] = []
}

extension Simulation {
    func beginOperator() {
        schedule(.operatorClient, at: now + operatorRandom.duration(.seconds(1)...(.seconds(4))))
    }

    /// One operator request: a node drained (with its tasks moved, or not), one undrained,
    /// or an ended task removed with its history. In the quiet phase it only undrains, until
    /// no node is drained: the end state wants every task that is to run running.
    func operatorRequest() -> TraceRecord? {
        guard !finished else { return nil }
        let drainedNow = manager?.machine.listNodes().filter(\.drained).map(\.id) ?? []
        if phase == .quiet {
            guard manager == nil || !drainedNow.isEmpty || !operators.pending.isEmpty else { return nil }
            schedule(.operatorClient, at: now + .milliseconds(500))
        } else {
            schedule(.operatorClient, at: now + operatorRandom.duration(.milliseconds(500)...(.seconds(5))))
        }
        guard let manager, !leaderPaused else { return simRecord("operator: the manager is down or does not answer") }
        let request = RequestID(rawValue: clients.nextRequest)
        clients.nextRequest += 1
        if phase == .quiet {
            guard let node = drainedNow.first else { return simRecord("operator: waiting for answers") }
            operators.pending[request] = .drain(node, drain: false, move: false)
            return feedManager(.drainNode(request, node, drain: false, move: false))
        }
        switch operatorRandom.weighted([30, 30, 40]) {
        case 0:
            let node = nodes[operatorRandom.int(0...(nodes.count - 1))].id
            let move = operatorRandom.chance(0.5)
            operators.pending[request] = .drain(node, drain: true, move: move)
            return feedManager(.drainNode(request, node, drain: true, move: move))
        case 1:
            let node = drainedNow.isEmpty || operatorRandom.chance(0.1) ? nodes[operatorRandom.int(0...(nodes.count - 1))].id : operatorRandom.pick(drainedNow)
            operators.pending[request] = .drain(node, drain: false, move: false)
            return feedManager(.drainNode(request, node, drain: false, move: false))
        default:
            // Mostly an ended task; now and then one that has not ended (refused: it is live).
            let ended = manager.machine.taskTable.order.filter { manager.machine.task($0)?.state.isTerminal == true }
            let candidates = ended.isEmpty || operatorRandom.chance(0.15) ? clients.known : ended
            guard !candidates.isEmpty else { return simRecord("operator: no task to remove") }
            let task = operatorRandom.pick(candidates)
            // Until it is answered, the task may go at any moment: the clients' book stops
            // holding the manager to keeping it.
            operators.pending[request] = .purge(
                task, created: manager.machine.task(task)?.createdAt,
                acknowledged: clients.acknowledged.removeValue(forKey: task), stopped: clients.stopped.removeValue(forKey: task))
            return feedManager(.purge(request, task))
        }
    }

    /// The manager answers an operator's request.
    func operatorAnswered(_ request: OperatorBook.Request, _ answer: ManagerMachine.Answer) {
        switch (request, answer) {
        case (.drain(let node, let drain, _), .nodeDrained):
            if drain {
                operators.drained.insert(node)
                counters.drains += 1
            } else {
                operators.drained.remove(node)
                counters.undrains += 1
            }
        case (.drain(let node, _, _), .refused(.unavailable)):
            // Not stored yet, but applied, and stored by the manager's retry: either way now.
            operators.drained.remove(node)
        case (.purge(let task, _, _, _), .purged):
            // Answers to requests made before the purge may have come since (a stop): they
            // were about the task that is gone.
            clients.acknowledged[task] = nil
            clients.stopped[task] = nil
            counters.purges += 1
        case (.purge(let task, let created, let acknowledged, let stopped), .refused(.unavailable))
            where manager?.machine.task(task).map({ $0.createdAt != created }) ?? true:
            // Applied, and stored by the manager's retry unless it crashes first: that crash
            // decides (``operatorRequestsLost()``). The manager may already hold a later task
            // of the same id, submitted in the same failed commit. (Refused before it was
            // applied, the manager still has the same task: nothing changed.)
            operators.limbo.append((task, created, acknowledged, stopped))
        case (.purge(let task, _, let acknowledged, let stopped), _):
            restore(task, acknowledged: acknowledged, stopped: stopped)
        default:
            break
        }
    }

    /// The operator's requests in flight when the manager crashed: never answered. A purge
    /// may have been committed or not; the store says which.
    func operatorRequestsLost() {
        var purges = operators.limbo
        for (_, request) in operators.pending.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            if case .purge(let task, let created, let acknowledged, let stopped) = request { purges.append((task, created, acknowledged, stopped)) }
        }
        // Kept by the store (the same task, not a later one of the same id): not removed.
        for (task, created, acknowledged, stopped) in purges where store.tasks[task] != nil && store.tasks[task]?.createdAt == created {
            restore(task, acknowledged: acknowledged, stopped: stopped)
        }
        operators.pending = [:]
        operators.limbo = []
    }

    private func restore(_ task: TaskID, acknowledged: TaskSpec?, stopped: (at: Moment, attempt: Int)?) {
        if let acknowledged, clients.acknowledged[task] == nil { clients.acknowledged[task] = acknowledged }
        if let stopped, clients.stopped[task] == nil { clients.stopped[task] = stopped }
    }

    /// `drained-node-gets-nothing`: nothing is placed on a node whose drain was answered (and
    /// whose undrain is not in flight).
    func checkPlacement(of task: TaskID, on node: NodeID) {
        guard operators.drained.contains(node) else { return }
        let undraining = operators.pending.values.contains { if case .drain(node, false, _) = $0 { true } else { false } }
        guard !undraining else { return }
        violate(.drainedNodeGetsNothing, "task \(task.short) placed on \(node), drained (and its drain answered)")
    }
}
