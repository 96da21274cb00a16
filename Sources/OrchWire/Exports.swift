// The messages of the cluster protocol live in OrchCore (the control core speaks them
// without I/O); whoever imports the codec gets them too.
@_exported import OrchCore
